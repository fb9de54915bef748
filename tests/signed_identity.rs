//! The gateway-signed grant JWT (issue 17): the mock bank verifies it against the
//! gateway's JWKS; tampered, expired or foreign JWTs are refused by the bank; keys rotate
//! under load without a failed verification; a revoked consent yields no JWT; a client's
//! own `x-fapi-grant` never reaches the bank; the README's Python verification runs as
//! written against the real gateway.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

fn part(jwt: &str, i: usize) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(i).unwrap()).unwrap()).unwrap()
}

/// The grant JWT the bank last received (exactly one).
fn jwt_at(bank: &fapi_devkit::fixtures::Bank) -> String {
    let seen = bank.last_headers().unwrap();
    let values: Vec<_> = seen.get_all("x-fapi-grant").iter().map(|v| v.to_str().unwrap().to_string()).collect();
    assert_eq!(values.len(), 1, "{values:?}");
    values[0].clone()
}

fn checker(w: &World) -> Arc<fapi_devkit::fixtures::GrantChecker> {
    w.fixtures.go_bank.grant_checker().expect("the World has Go Bank verify grant JWTs")
}

fn tpp_thumbprint(w: &World) -> String {
    let der = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap().remove(0);
    fapi_enforcement::client_identity::thumbprint(&der)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bank_verifies_the_grant_jwt_and_its_claims_are_the_grant() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let interaction = r.headers()["x-fapi-interaction-id"].to_str().unwrap().to_string();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Data"]["Account"][0]["AccountId"], "GB-1001");
    let checker = checker(&w);
    assert_eq!((checker.verified.load(Ordering::SeqCst), checker.rejected.load(Ordering::SeqCst)), (1, 0));

    let jwt = jwt_at(&w.fixtures.go_bank);
    let (header, claims) = (part(&jwt, 0), part(&jwt, 1));
    assert_eq!(header, json!({"alg": "ES256", "typ": "fapi-grant+jwt", "kid": "test-1"}));
    assert_eq!(claims["iss"], "https://fapi-gateway.test");
    assert_eq!(claims["aud"], "gobank");
    assert_eq!((claims["sub"].as_str(), claims["client_id"].as_str()), (Some("alice"), Some("financroo")));
    assert_eq!(claims["scope"], "openid accounts");
    assert_eq!(claims["consent_id"], consent.as_str());
    assert_eq!(claims["consent_kind"], "account-access-consent");
    assert_eq!(claims["consent_status"], "Authorised");
    assert_eq!(claims["consent_accounts"], json!(["GB-1001"]));
    assert_eq!(claims["cnf"], json!({"x5t#S256": tpp_thumbprint(&w)}));
    assert_eq!(claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(), 60);
    assert!(claims.get("x-fapi-interaction-id").is_none(), "per request: in its own header");
    // The plain identity headers still come (identity_headers = true), and agree.
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    assert_eq!(seen["x-subject"], "alice");
    assert_eq!(seen["x-fapi-interaction-id"], interaction.as_str());

    // The token's next request reuses the JWT (same jti), with a new interaction id.
    let r = w.get(&w.tpp, "/gobank/accounts/GB-1001/balances", &token).await;
    assert_eq!(r.status(), 200);
    assert_eq!(jwt_at(&w.fixtures.go_bank), jwt, "signed once per token, API and lifetime");
    assert_ne!(w.fixtures.go_bank.last_headers().unwrap()["x-fapi-interaction-id"], interaction.as_str());
    // Another token of the same consent: its own JWT.
    let other = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &other).await.status(), 200);
    assert_ne!(part(&jwt_at(&w.fixtures.go_bank), 1)["jti"], claims["jti"]);

    // Hyperscale Bank's policy forwards none.
    let hs = w.consent(&w.tpp, "hyperscalebank", &["accounts"], "alice", &["HS-1001"]).await;
    let hs_token = w.token(&w.tpp, Some(&hs), "openid accounts", None).await;
    assert_eq!(w.get(&w.tpp, "/hyperscalebank/accounts", &hs_token).await.status(), 200);
    assert!(w.fixtures.hyperscale_bank.last_headers().unwrap().get("x-fapi-grant").is_none());

    // The JWKS on the admin listener: public keys only.
    let r = reqwest::get(format!("http://{}/.well-known/jwks.json", w.admin_addr)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jwk-set+json");
    let jwks: Value = r.json().await.unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!((jwks["keys"][0]["kid"].as_str(), jwks["keys"][0]["kty"].as_str()), (Some("test-1"), Some("EC")));
    assert!(jwks["keys"][0].get("d").is_none());
}

/// A JWT signed with `key_pem` (PKCS#8 P-256) under `kid`, with `claims`.
fn sign(key_pem: &[u8], kid: &str, claims: &Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.into());
    header.typ = Some("fapi-grant+jwt".into());
    jsonwebtoken::encode(&header, claims, &jsonwebtoken::EncodingKey::from_ec_pem(key_pem).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_expired_or_foreign_jwt_is_refused_by_the_bank() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let jwt = jwt_at(&w.fixtures.go_bank);
    let claims = part(&jwt, 1);
    let bank = reqwest::Client::new();
    let at_bank = |jwt: String| {
        let bank = bank.clone();
        let url = format!("http://{}/accounts", w.fixtures.go_bank_addr);
        async move { bank.get(url).header("x-fapi-grant", jwt).send().await.unwrap().status().as_u16() }
    };
    let checker = checker(&w);
    let rejected_before = checker.rejected.load(Ordering::SeqCst);
    // The genuine JWT verifies (the positive control of the cases below).
    assert_eq!(at_bank(jwt.clone()).await, 200);

    // Tampered: the customer changed, the signature kept.
    let mut forged = claims.clone();
    forged["sub"] = json!("bob");
    forged["consent_accounts"] = json!(["GB-2001"]);
    let parts: Vec<&str> = jwt.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
    assert_eq!(at_bank(tampered).await, 401);
    // Signature bytes changed.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    assert_eq!(at_bank(format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig))).await, 401);
    // Signed by the gateway's own key, but expired (past the bank's 5 s leeway).
    let key = std::fs::read(w.pki.grant_jwt_key()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut expired = claims.clone();
    (expired["iat"], expired["exp"]) = (json!(now - 120), json!(now - 60));
    assert_eq!(at_bank(sign(&key, "test-1", &expired)).await, 401);
    // The same key, still valid: accepted (the bank's checks are what refused the others).
    let mut fresh = claims.clone();
    (fresh["iat"], fresh["exp"]) = (json!(now), json!(now + 60));
    assert_eq!(at_bank(sign(&key, "test-1", &fresh)).await, 200);
    // For another API.
    let mut elsewhere = fresh.clone();
    elsewhere["aud"] = json!("hyperscalebank");
    assert_eq!(at_bank(sign(&key, "test-1", &elsewhere)).await, 401);
    // Another key under the gateway's kid, and under a kid the gateway never published.
    let stranger = rcgen::KeyPair::generate().unwrap().serialize_pem();
    assert_eq!(at_bank(sign(stranger.as_bytes(), "test-1", &fresh)).await, 401);
    assert_eq!(at_bank(sign(stranger.as_bytes(), "stranger", &fresh)).await, 401);
    // None at all, and the plain headers alone.
    let r = bank
        .get(format!("http://{}/accounts", w.fixtures.go_bank_addr))
        .header("x-subject", "alice")
        .header("x-consent-accounts", "GB-1001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A valid JWT with plain headers that say otherwise.
    let r = bank
        .get(format!("http://{}/accounts", w.fixtures.go_bank_addr))
        .header("x-fapi-grant", jwt.clone())
        .header("x-subject", "bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(checker.rejected.load(Ordering::SeqCst) - rejected_before, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_consent_never_yields_a_jwt() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let before = jwt_at(&w.fixtures.go_bank);
    let requests = w.bank_requests();
    // The authorization server revokes it and tells the gateway (its revocation hook).
    assert!(w.fixtures.authorization_server.revoke_consent(&consent).await);
    for path in ["/gobank/accounts", "/gobank/accounts/GB-1001/balances"] {
        let (status, _, _, _) = refusal(w.get(&w.tpp, path, &token).await).await;
        assert!(status == 401 || status == 403, "{path}: {status}");
    }
    assert_eq!(w.bank_requests(), requests, "nothing reached the bank");
    assert_eq!(jwt_at(&w.fixtures.go_bank), before, "no JWT signed or sent since");
    // Revoked at the gateway only (the cache entry, and the JWT kept with it, go at once).
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let r = reqwest::Client::new()
        .post(format!("http://{}/revocations", w.admin_addr))
        .bearer_auth(ADMIN_SECRET)
        .json(&json!({"consent_id": consent}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let jwt = jwt_at(&w.fixtures.go_bank);
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200, "still authorised at the server");
    assert_eq!(w.introspections(), calls + 1, "introspected again");
    assert_ne!(jwt_at(&w.fixtures.go_bank), jwt, "a new JWT for the new cache entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_own_grant_header_never_reaches_the_bank() {
    let options = Options {
        // Hyperscale Bank under another header name, with the JWT alone.
        policy_additions: vec![(
            "hyperscalebank.toml".into(),
            "forward_jwt = { header = \"x-hs-grant\", identity_headers = false }".into(),
        )],
        ..Options::default()
    };
    let w = World::start_with(options).await;
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let genuine = jwt_at(&w.fixtures.go_bank);
    // A JWT the client got hold of (a replay), a forgery, and several copies.
    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-fapi-grant", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.")
        .header("X-Fapi-Grant", genuine.clone())
        .header("x-hs-grant", "forged")
        .header("x_fapi_grant", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    assert_eq!(seen.get_all("x-fapi-grant").iter().count(), 1);
    assert!(seen.get("x-hs-grant").is_none() && seen.get("x_fapi_grant").is_none(), "{seen:?}");
    assert_eq!(part(&jwt_at(&w.fixtures.go_bank), 1)["sub"], "alice");

    // Hyperscale Bank: its own header, the JWT alone; the client's x-fapi-grant removed too.
    let hs = w.consent(&w.tpp, "hyperscalebank", &["accounts"], "alice", &["HS-1001"]).await;
    let hs_token = w.token(&w.tpp, Some(&hs), "openid accounts", None).await;
    let r = w
        .tpp
        .get(w.url("/hyperscalebank/accounts"))
        .bearer_auth(&hs_token)
        .header("x-fapi-grant", genuine)
        .header("x-hs-grant", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = w.fixtures.hyperscale_bank.last_headers().unwrap();
    assert!(seen.get("x-fapi-grant").is_none(), "{seen:?}");
    assert!(seen.get("x-subject").is_none() && seen.get("x-consent-id").is_none(), "identity_headers = false");
    let hs_jwt: Vec<_> = seen.get_all("x-hs-grant").iter().collect();
    assert_eq!(hs_jwt.len(), 1);
    let claims = part(hs_jwt[0].to_str().unwrap(), 1);
    assert_eq!((claims["aud"].as_str(), claims["consent_id"].as_str()), (Some("hyperscalebank"), Some(hs.as_str())));
    let hs_checker = w.fixtures.hyperscale_bank.grant_checker().unwrap();
    assert_eq!(hs_checker.rejected.load(Ordering::SeqCst), 0);
    assert!(hs_checker.verified.load(Ordering::SeqCst) >= 1);
}

/// A `[grant_jwt]` section with these (kid, key file, algorithm) keys.
fn grant_section(keys: &[(&str, &str, &str)], extra: &str) -> String {
    let mut s = format!("[grant_jwt]\nissuer = \"https://fapi-gateway.test\"\n{extra}");
    for (kid, file, alg) in keys {
        s.push_str(&format!(
            "[[grant_jwt.keys]]\nkid = \"{kid}\"\nalgorithm = \"{alg}\"\nprivate_key_file = \"{file}\"\n"
        ));
    }
    s
}

fn rewrite_grant_section(w: &World, section: &str) {
    let path = w.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find("[grant_jwt]").unwrap();
    let end = text[start..].find("\n\n").map(|e| start + e).unwrap_or(text.len());
    let text = format!("{}{}{}", &text[..start], section, &text[end..]);
    std::fs::write(&path, text).unwrap();
}

async fn jwks_kids(w: &World) -> Vec<String> {
    let jwks: Value =
        reqwest::get(format!("http://{}/.well-known/jwks.json", w.admin_addr)).await.unwrap().json().await.unwrap();
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_rotate_under_load_without_a_failed_verification() {
    let w = Arc::new(World::start().await);
    let mut tokens = Vec::new();
    for _ in 0..4 {
        tokens.push(w.go_bank_token().await.1);
    }
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(w.pki.dir.join("grant-2.key"), ed25519.serialize_pem()).unwrap();

    // Load: 4 clients, bounded in time and count.
    let failed = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for token in tokens {
        let (w, failed, sent, stop) = (w.clone(), failed.clone(), sent.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && sent.load(Ordering::SeqCst) < 5_000 {
                let status = w.get(&w.tpp, "/gobank/accounts", &token).await.status();
                sent.fetch_add(1, Ordering::SeqCst);
                if status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    let wait_for_requests = |n: u64| {
        let sent = sent.clone();
        async move {
            let start = sent.load(Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while sent.load(Ordering::SeqCst) < start + n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for_requests(50).await;
    // 1. The new key (EdDSA) is added as the last: it signs, both are published.
    rewrite_grant_section(
        &w,
        &grant_section(&[("test-1", "certs/grant-jwt.key", "ES256"), ("test-2", "certs/grant-2.key", "EdDSA")], ""),
    );
    w.gateway.reloader.reload().unwrap();
    assert_eq!(jwks_kids(&w).await, ["test-1", "test-2"]);
    wait_for_requests(50).await;
    assert_eq!(part(&jwt_at(&w.fixtures.go_bank), 0)["kid"], "test-2", "the newest key signs");
    // 2. The old key's file is replaced by another key under a new kid, named to sign.
    let p256 = rcgen::KeyPair::generate().unwrap();
    std::fs::write(w.pki.dir.join("grant-3.key"), p256.serialize_pem()).unwrap();
    rewrite_grant_section(
        &w,
        &grant_section(
            &[("test-2", "certs/grant-2.key", "EdDSA"), ("test-3", "certs/grant-3.key", "ES256")],
            "signing_kid = \"test-3\"\n",
        ),
    );
    w.gateway.reloader.reload().unwrap();
    assert_eq!(jwks_kids(&w).await, ["test-2", "test-3"]);
    wait_for_requests(50).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    let header = part(&jwt_at(&w.fixtures.go_bank), 0);
    assert_eq!((header["kid"].as_str(), header["alg"].as_str()), (Some("test-3"), Some("ES256")));
    let checker = checker(&w);
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed during the rotation");
    assert_eq!(checker.rejected.load(Ordering::SeqCst), 0, "the bank refused a JWT during the rotation");
    assert!(checker.verified.load(Ordering::SeqCst) >= 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_can_be_served_on_the_main_listener() {
    let w = World::start().await;
    assert_eq!(w.tpp.get(w.url("/.well-known/jwks.json")).send().await.unwrap().status(), 404, "off by default");
    rewrite_grant_section(
        &w,
        &grant_section(&[("test-1", "certs/grant-jwt.key", "ES256")], "jwks_on_listener = true\n"),
    );
    w.gateway.reloader.reload().unwrap();
    let r = w.tpp.get(w.url("/.well-known/jwks.json")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let on_listener: Value = r.json().await.unwrap();
    let on_admin: Value =
        reqwest::get(format!("http://{}/.well-known/jwks.json", w.admin_addr)).await.unwrap().json().await.unwrap();
    assert_eq!(on_listener, on_admin);
}

/// The Python block of the README's "Verifying the gateway at the bank" section.
fn readme_snippet() -> String {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    let section = &readme[readme.find("## Verifying the gateway at the bank").expect("the README section")..];
    let start = section.find("```python\n").expect("a python block") + "```python\n".len();
    section[start..start + section[start..].find("```").unwrap()].to_string()
}

fn python_verifies(w: &World, jwt: &str, audience: &str) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-c", &readme_snippet()])
        .env("JWKS_URL", format!("http://{}/.well-known/jwks.json", w.admin_addr))
        .env("GRANT_JWT", jwt)
        .env("AUDIENCE", audience)
        .env("ISSUER", "https://fapi-gateway.test")
        .output()
        .expect("python3 is installed (.ci/run installs python3-jwt python3-cryptography)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("No module named"), "PyJWT and cryptography are needed: {text}");
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_python_verification_accepts_the_gateways_jwt_and_nothing_else() {
    let w = World::start().await;
    let (consent, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let jwt = jwt_at(&w.fixtures.go_bank);
    let (ok, out) = python_verifies(&w, &jwt, "gobank");
    assert!(ok, "{out}");
    let claims: Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["consent_id"].as_str()), (Some("alice"), Some(consent.as_str())));
    // For another API, or tampered: refused.
    assert!(!python_verifies(&w, &jwt, "hyperscalebank").0);
    let parts: Vec<&str> = jwt.split('.').collect();
    let mut forged = part(&jwt, 1);
    forged["sub"] = json!("bob");
    let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(forged.to_string()), parts[2]);
    assert!(!python_verifies(&w, &tampered, "gobank").0);
    // After a rotation to an EdDSA key, the snippet fetches the new key by its kid.
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    std::fs::write(w.pki.dir.join("grant-2.key"), ed25519.serialize_pem()).unwrap();
    rewrite_grant_section(
        &w,
        &grant_section(&[("test-1", "certs/grant-jwt.key", "ES256"), ("test-2", "certs/grant-2.key", "EdDSA")], ""),
    );
    w.gateway.reloader.reload().unwrap();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let rotated = jwt_at(&w.fixtures.go_bank);
    assert_eq!(part(&rotated, 0)["alg"], "EdDSA");
    let (ok, out) = python_verifies(&w, &rotated, "gobank");
    assert!(ok, "{out}");
}

/// A smoke run of the benchmark's `jwt` scenario (timings are not asserted; RESULTS.md has
/// real runs): both sides answer, with no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_compares_the_hot_path_with_and_without_the_jwt() {
    use fapi_devkit::bench::{BenchOptions, Scenario};
    fapi_enforcement::install_crypto_provider();
    let options = BenchOptions {
        concurrency: 2,
        duration: Duration::from_millis(300),
        max_requests: 200,
        hot_tokens: 5,
        cold_tokens: 1,
        scenarios: vec![Scenario::GrantJwt],
        memory: vec![],
        binary: env!("CARGO_BIN_EXE_fapi-gateway").into(),
        rounds: 1,
        reqwest: true,
        // oha is the benchmark's (benches/run.sh installs it), not the tests'.
        oha: false,
    };
    let report = fapi_devkit::bench::run(options).await.unwrap();
    let table = report.table();
    let names: Vec<&str> = report.scenarios.iter().map(|m| m.scenario).collect();
    assert_eq!(names, ["gateway-hot-jwt-off", "gateway-hot-jwt-on"], "{table}");
    for m in &report.scenarios {
        assert!(m.requests > 0 && m.errors == 0 && m.refused == 0, "{table}");
    }
    assert!(report.ratios.iter().any(|(name, _)| name.contains("grant JWT")), "{table}");
}
