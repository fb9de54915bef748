//! Standard revocation signals in (issue 13): Security Event Tokens pushed to the gateway's
//! receiver (RFC 8935) by the mock authorization server, whose JWKS the gateway fetches
//! over real HTTPS. Every refused SET is answered with its RFC 8935 error and evicts
//! nothing; every accepted one evicts what it names and only that.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use fapi_enforcement::introspection::unix_now;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const OB_REVOKED: &str = "urn:uk:org:openbanking:events:consent-authorization-revoked";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";

async fn world() -> World {
    let w = World::start_with(Options { signals: Some(String::new()), ..Options::default() }).await;
    keys_loaded(&w).await;
    w
}

/// The transmitter's keys are fetched in the background at start (503 until then): wait,
/// bounded, so a loaded machine does not turn the first push of a test into a 503.
async fn keys_loaded(w: &World) {
    let probe = signed_by_stranger(&json!({"iss": issuer(w), "jti": "probe"}), "probe");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while push(w, &probe).await.0 == 503 {
        assert!(std::time::Instant::now() < deadline, "the transmitter's keys were not loaded within 15 s");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn issuer(w: &World) -> String {
    format!("https://{}", w.fixtures.authorization_server_addr)
}

fn consent_event(w: &World, jti: &str, consent: &str) -> Value {
    json!({"iss": issuer(w), "aud": SIGNALS_AUDIENCE, "iat": unix_now(), "jti": jti,
        "events": {OB_REVOKED: {"subject": {
            "subject_type": "http://openbanking.org.uk/rid_http://openbanking.org.uk/rty",
            "http://openbanking.org.uk/rid": consent,
            "http://openbanking.org.uk/rty": "account-access-consent"}}}})
}

/// Signed by the mock authorization server's own key.
fn signed(w: &World, claims: &Value) -> String {
    w.fixtures.authorization_server.signals.sign(claims)
}

/// Signed by a key the authorization server never published, under `kid`.
fn signed_by_stranger(claims: &Value, kid: &str) -> String {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    header.typ = Some("secevent+jwt".into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()).unwrap()
}

async fn push_as(w: &World, content_type: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://{}/signals/events", w.admin_addr))
        .header("content-type", content_type)
        .timeout(std::time::Duration::from_secs(10))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    if status == 400 {
        assert_eq!(r.headers()["content-type"], "application/json");
    }
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn push(w: &World, jwt: &str) -> (u16, Value) {
    push_as(w, "application/secevent+jwt", jwt).await
}

async fn revoked_evictions(w: &World) -> f64 {
    w.metric("fapi_gateway_cache_evictions_total{cause=\"revoked\"}").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sets_get_their_rfc_8935_error_and_evict_nothing() {
    let w = world().await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    // Revoked at the server, the gateway not told: only a valid signal may evict the
    // cached answer.
    assert!(w.fixtures.authorization_server.revoke_consent_quietly(&consent));
    let kid = w.fixtures.authorization_server.signals.jwks()["keys"][0]["kid"].as_str().unwrap().to_string();
    let invalid_key_before = w.metric("fapi_gateway_signals_total{result=\"invalid_key\"}").await;

    let event = |jti: &str| consent_event(&w, jti, &consent);
    let with = |jti: &str, name: &str, value: Value| {
        let mut e = event(jti);
        e[name] = value;
        e
    };
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &event("hs"),
        &EncodingKey::from_secret(b"an-hmac-secret-anyone-could-share"),
    )
    .unwrap();
    let mut unknown_event = event("unknown-event");
    unknown_event["events"] =
        json!({"https://example.com/events/unheard-of": {"subject": {"format": "opaque", "id": "x"}}});
    let mut no_events = event("no-events");
    no_events.as_object_mut().unwrap().remove("events");
    let alg_none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoic2VjZXZlbnQrand0In0.{}.",
        URL_SAFE_NO_PAD.encode(event("none").to_string())
    );
    let cases: Vec<(&str, &str, String)> = vec![
        ("bad signature", "invalid_key", signed_by_stranger(&event("bad-signature"), &kid)),
        ("unknown key", "invalid_key", signed_by_stranger(&event("unknown-key"), "no-such-key")),
        ("HS256", "invalid_key", hs256),
        ("alg none", "invalid_request", alg_none),
        ("wrong iss", "invalid_issuer", signed(&w, &with("iss", "iss", json!("https://evil.example")))),
        ("wrong aud", "invalid_audience", signed(&w, &with("aud", "aud", json!("https://other-gateway.example")))),
        ("stale iat", "invalid_request", signed(&w, &with("stale", "iat", json!(unix_now() - 3600)))),
        ("future iat", "invalid_request", signed(&w, &with("future", "iat", json!(unix_now() + 3600)))),
        ("unknown event", "invalid_request", signed(&w, &unknown_event)),
        ("no events", "invalid_request", signed(&w, &no_events)),
        ("malformed JWT", "invalid_request", "eyJhbGciOiJFUzI1NiJ9.not-base64!.x".into()),
        ("not a JWT", "invalid_request", "consent_id=everything".into()),
    ];
    for (case, err, jwt) in &cases {
        let (status, body) = push(&w, jwt).await;
        assert_eq!((status, body["err"].as_str().unwrap_or("")), (400, *err), "{case}: {body}");
        assert!(!body["description"].as_str().unwrap_or("").is_empty(), "{case}: {body}");
    }
    // A valid SET in the wrong media type.
    let (status, body) = push_as(&w, "application/json", &signed(&w, &event("json"))).await;
    assert_eq!((status, body["err"].as_str().unwrap()), (400, "invalid_request"), "{body}");

    // Nothing was evicted: the revoked consent's token still works from the cache.
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.introspections(), calls, "answered from the cache");
    assert_eq!(revoked_evictions(&w).await, 0.0);
    assert_eq!(w.metric("fapi_gateway_signals_total{result=\"invalid_key\"}").await - invalid_key_before, 3.0);

    // The valid SET, then: refused at once, and its replay is an error.
    let valid = signed(&w, &event("the-one"));
    assert_eq!(push(&w, &valid).await.0, 202);
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
    let (status, body) = push(&w, &valid).await;
    assert_eq!((status, body["err"].as_str().unwrap()), (400, "invalid_request"), "{body}");
    assert!(body["description"].as_str().unwrap().contains("received already"), "{body}");
    assert_eq!(w.metric("fapi_gateway_signals_total{result=\"accepted\"}").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authorization_server_revoking_a_consent_pushes_a_set_that_refuses_the_next_request() {
    let w = world().await;
    let (consent, token) = w.go_bank_token().await;
    let (_, other_token) = w.go_bank_token().await;
    for t in [&token, &other_token] {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", t).await.status(), 200);
    }
    // The TPP revokes: the server pushes its SET before answering.
    let r = w.tpp.delete(w.as_url(&format!("/consents/{consent}"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(w.metric("fapi_gateway_signals_total{result=\"accepted\"}").await, 1.0);
    assert_eq!(w.metric("fapi_gateway_revocations_total{kind=\"consent\"}").await, 1.0);
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
    // The other consent's token is untouched, still from the cache.
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &other_token).await.status(), 200);
    assert_eq!(w.introspections(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caep_session_revoked_by_subject_refuses_that_subjects_tokens_only() {
    let w = world().await;
    let alice_1 = w.go_bank_token().await.1;
    let alice_2 = w.go_bank_token().await.1;
    let bob_consent = w.consent(&w.tpp, "gobank", &GO_BANK_PERMISSIONS, "bob", &["GB-2001"]).await;
    let bob = w.token(&w.tpp, Some(&bob_consent), "openid accounts", None).await;
    for t in [&alice_1, &alice_2, &bob] {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", t).await.status(), 200);
    }
    assert_eq!(w.fixtures.authorization_server.revoke_subject_quietly("alice"), 2);
    // Alice's tokens still work from the cache until the signal.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &alice_1).await.status(), 200);
    let set = json!({"iss": issuer(&w), "aud": SIGNALS_AUDIENCE, "iat": unix_now(), "jti": "caep-1",
        "events": {SESSION_REVOKED: {
            "subject": {"format": "iss_sub", "iss": issuer(&w), "sub": "alice"},
            "event_timestamp": unix_now(), "initiating_entity": "user"}}});
    assert_eq!(push(&w, &signed(&w, &set)).await.0, 202);
    assert_eq!(revoked_evictions(&w).await, 2.0);
    for t in [&alice_1, &alice_2] {
        let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/accounts", t).await).await;
        assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.InvalidConsentStatus"));
    }
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &bob).await.status(), 200);
    assert_eq!(w.introspections(), calls, "bob's answer is still cached");
    // A subject format the gateway cannot match to tokens is refused, evicting nothing.
    let mut by_email = set.clone();
    by_email["jti"] = json!("caep-2");
    by_email["events"][SESSION_REVOKED]["subject"] = json!({"format": "email", "email": "bob@example.com"});
    let (status, body) = push(&w, &signed(&w, &by_email)).await;
    assert_eq!((status, body["err"].as_str().unwrap()), (400, "invalid_request"), "{body}");
    assert_eq!(revoked_evictions(&w).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transmitter_with_a_bearer_secret_must_present_it() {
    let secret = "transmitter-push-secret-0123456789";
    let w = World::start_with(Options { signals: Some(format!("bearer_secret = \"{secret}\"")), ..Options::default() })
        .await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let jwt = signed(&w, &consent_event(&w, "b-1", &consent));
    let url = format!("http://{}/signals/events", w.admin_addr);
    let send = |bearer: Option<&'static str>| {
        let mut r =
            reqwest::Client::new().post(&url).header("content-type", "application/secevent+jwt").body(jwt.clone());
        if let Some(b) = bearer {
            r = r.bearer_auth(b);
        }
        r.send()
    };
    for bearer in [None, Some("transmitter-push-secret-0123456780")] {
        let r = send(bearer).await.unwrap();
        assert_eq!(r.status(), 400);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["err"], "authentication_failed", "{body}");
    }
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(send(Some("transmitter-push-secret-0123456789")).await.unwrap().status(), 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_signals_mistakes_with_their_lines() {
    let w = world().await;
    let path = w.dir.path().join("gateway.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let cases = [
        (config.replace("jwks_uri = ", "jwks_file = \"missing.json\"\njwks_uri = "), "give jwks_uri or jwks_file"),
        (
            config.replace(
                "[[signals.transmitters]]\n",
                "[[signals.transmitters]]\nauthorization_servers = [\"nope\"]\n",
            ),
            "unknown authorization server `nope`",
        ),
        (config.replace("[signals]\n", "[signals]\npath = \"/metrics\"\n"), "signals.path `/metrics`"),
        (config.replace("[signals]\n", "[signals]\nmax_age_seconds = 0\n"), "max_age_seconds must be between"),
        (
            format!(
                "{config}\n[[signals.transmitters.events]]\ntype = \"https://x.example/e\"\nrevokes = \"consent\"\n"
            ),
            "give claim (in the event) or set_claim",
        ),
    ];
    for (text, expected) in cases {
        let errors = fapi_enforcement::config::GatewayConfig::parse(&path, &text).unwrap_err();
        let found = errors.0.iter().find(|e| e.message.contains(expected));
        let found = found.unwrap_or_else(|| panic!("`{expected}` not in {errors}"));
        assert!(found.line.is_some(), "{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opaque_subject_names_one_token_when_configured_so() {
    let w =
        World::start_with(Options { signals: Some("opaque_subjects = \"token\"".into()), ..Options::default() }).await;
    keys_loaded(&w).await;
    let (consent, token) = w.go_bank_token().await;
    let sibling = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    for t in [&token, &sibling] {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", t).await.status(), 200);
    }
    assert!(w.fixtures.authorization_server.revoke_token_quietly(&token));
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200, "still cached");
    let set = json!({"iss": issuer(&w), "aud": SIGNALS_AUDIENCE, "iat": unix_now(), "jti": "tok-1",
        "events": {SESSION_REVOKED: {"subject": {"format": "opaque", "id": token}}}});
    assert_eq!(push(&w, &signed(&w, &set)).await.0, 202);
    assert_eq!(w.metric("fapi_gateway_revocations_total{kind=\"token\"}").await, 1.0);
    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // The consent's other token is untouched, still from the cache.
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &sibling).await.status(), 200);
    assert_eq!(w.introspections(), calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_whose_keys_cannot_be_fetched_is_answered_503_for_a_retry() {
    let nowhere = free_port();
    let extra = format!("jwks_uri = \"https://{nowhere}/jwks\"");
    let w = World::start_with(Options { signals: Some(extra), ..Options::default() }).await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("http://{}/signals/events", w.admin_addr))
        .header("content-type", "application/secevent+jwt")
        .body(signed(&w, &consent_event(&w, "k-1", &consent)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(revoked_evictions(&w).await, 0.0);
    assert_eq!(w.metric("fapi_gateway_signals_total{result=\"unavailable\"}").await, 1.0);
}
