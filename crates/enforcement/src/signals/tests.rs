use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::mapping::IdPath;
use super::*;
use crate::cache::TokenKey;
use crate::introspection::unix_now;
use crate::policy::ClaimPath;

const ISSUER: &str = "https://as.bank.example";
const AUDIENCE: &str = "https://gateway.bank.example/signals";

struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

fn es256(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let raw = pair.public_key_raw();
    Signer {
        key: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        alg: Algorithm::ES256,
        kid: kid.into(),
        jwk: json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}),
    }
}

fn ed25519(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    Signer {
        key: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
        alg: Algorithm::EdDSA,
        kid: kid.into(),
        jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())}),
    }
}

impl Signer {
    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.typ = Some("secevent+jwt".into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

fn transmitter(keys: &[&Signer]) -> TransmitterConfig {
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_value(json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})).unwrap();
    TransmitterConfig {
        name: "bank-as".into(),
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        keys: KeySource::File(set),
        ca: None,
        servers: vec!["as".into()],
        all_servers: true,
        bearer_secret: None,
        opaque_subjects: OpaqueSubjects::Subject,
        events: Vec::new(),
    }
}

fn receiver(t: TransmitterConfig) -> SignalReceiver {
    SignalReceiver::new(&SignalsConfig {
        path: "/signals/events".into(),
        max_age: Duration::from_secs(300),
        replay_capacity: 1000,
        transmitters: vec![t],
    })
    .unwrap()
}

fn consent_revoked(jti: &str, consent: &str) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "iat": unix_now(), "jti": jti,
        "events": {openbanking::CONSENT_AUTHORIZATION_REVOKED: {"subject": {
            "subject_type": "http://openbanking.org.uk/rid_http://openbanking.org.uk/rty",
            "http://openbanking.org.uk/rid": consent,
            "http://openbanking.org.uk/rty": "account-access-consent"}}}})
}

async fn push(r: &SignalReceiver, jwt: &str) -> Result<Accepted, SignalError> {
    r.receive(Some("application/secevent+jwt"), None, jwt.as_bytes()).await
}

fn code(result: Result<Accepted, SignalError>) -> &'static str {
    match result {
        Ok(_) => "accepted",
        Err(SignalError::Refused { code, .. }) => code.as_str(),
        Err(SignalError::KeysUnavailable(_)) => "unavailable",
    }
}

#[tokio::test]
async fn a_signed_consent_revocation_is_accepted_once() {
    let key = es256("k1");
    let r = receiver(transmitter(&[&key]));
    let jwt = key.sign(&consent_revoked("j1", "aac-1"));
    let accepted = push(&r, &jwt).await.unwrap();
    assert_eq!(accepted.revocations, vec![Revocation { server: None, revoked: Revoked::Consent("aac-1".into()) }]);
    assert_eq!(accepted.jti, "j1");
    // The same SET again: a replay.
    match push(&r, &jwt).await {
        Err(SignalError::Refused { code: ErrorCode::InvalidRequest, description }) => {
            assert!(description.contains("received already"), "{description}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn each_verification_failure_has_its_rfc_8935_code() {
    let key = es256("k1");
    let stranger = es256("k1");
    let unknown = es256("k9");
    let r = receiver(transmitter(&[&key]));
    let mut wrong_issuer = consent_revoked("d", "aac-1");
    wrong_issuer["iss"] = json!("https://evil.example");
    let mut wrong_audience = consent_revoked("e", "aac-1");
    wrong_audience["aud"] = json!(["https://other.example"]);
    let hs256 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &consent_revoked("c", "aac-1"),
        &EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
    )
    .unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("invalid_key", stranger.sign(&consent_revoked("a", "aac-1"))),
        ("invalid_key", unknown.sign(&consent_revoked("b", "aac-1"))),
        ("invalid_key", hs256),
        ("invalid_issuer", key.sign(&wrong_issuer)),
        ("invalid_audience", key.sign(&wrong_audience)),
        ("invalid_request", "not.a.jwt".into()),
        // alg none, claims as a valid SET's.
        (
            "invalid_request",
            format!("eyJhbGciOiJub25lIn0.{}.", URL_SAFE_NO_PAD.encode(consent_revoked("n", "aac-1").to_string())),
        ),
    ];
    for (expected, jwt) in cases {
        assert_eq!(code(push(&r, &jwt).await), expected, "{jwt}");
    }
    let stale = {
        let mut c = consent_revoked("f", "aac-1");
        c["iat"] = json!(unix_now() - 301);
        key.sign(&c)
    };
    let future = {
        let mut c = consent_revoked("g", "aac-1");
        c["iat"] = json!(unix_now() + 600);
        key.sign(&c)
    };
    let no_iat = {
        let mut c = consent_revoked("h", "aac-1");
        c.as_object_mut().unwrap().remove("iat");
        key.sign(&c)
    };
    let no_jti = {
        let mut c = consent_revoked("", "aac-1");
        c.as_object_mut().unwrap().remove("jti");
        key.sign(&c)
    };
    let expired = {
        let mut c = consent_revoked("i", "aac-1");
        c["exp"] = json!(unix_now() - 120);
        key.sign(&c)
    };
    for jwt in [stale, future, no_iat, no_jti, expired] {
        assert_eq!(code(push(&r, &jwt).await), "invalid_request");
    }
    // An audience array naming this receiver among others is fine.
    let mut several = consent_revoked("j", "aac-1");
    several["aud"] = json!(["https://other.example", AUDIENCE]);
    assert_eq!(code(push(&r, &key.sign(&several)).await), "accepted");
}

#[tokio::test]
async fn typ_content_type_and_bearer_are_checked() {
    let key = es256("k1");
    let mut t = transmitter(&[&key]);
    t.bearer_secret = Some("transmitter-secret-0123456789".into());
    let r = receiver(t);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("k1".into());
    header.typ = Some("JWT".into());
    let jwt = jsonwebtoken::encode(&header, &consent_revoked("t1", "c"), &key.key).unwrap();
    let pushed =
        r.receive(Some("application/secevent+jwt"), Some("Bearer transmitter-secret-0123456789"), jwt.as_bytes());
    assert_eq!(code(pushed.await), "invalid_request");
    let jwt = key.sign(&consent_revoked("t2", "c"));
    assert_eq!(code(r.receive(Some("application/json"), None, jwt.as_bytes()).await), "invalid_request");
    assert_eq!(code(r.receive(Some("application/secevent+jwt"), None, jwt.as_bytes()).await), "authentication_failed");
    let wrong = Some("Bearer transmitter-secret-0123456780");
    assert_eq!(code(r.receive(Some("application/secevent+jwt"), wrong, jwt.as_bytes()).await), "authentication_failed");
    let right = Some("Bearer transmitter-secret-0123456789");
    // The refusals above did not use up the jti.
    assert_eq!(code(r.receive(Some("application/jwt; charset=utf-8"), right, jwt.as_bytes()).await), "accepted");
}

#[tokio::test]
async fn eddsa_and_keys_without_kid() {
    let key = ed25519("ed");
    let r = receiver(transmitter(&[&key]));
    assert_eq!(code(push(&r, &key.sign(&consent_revoked("e1", "c"))).await), "accepted");
    // Without a kid, the only key of the set.
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("secevent+jwt".into());
    let jwt = jsonwebtoken::encode(&header, &consent_revoked("e2", "c"), &key.key).unwrap();
    assert_eq!(code(push(&r, &jwt).await), "accepted");
    // Not with a key published for encryption, or for another algorithm.
    for (member, value) in [("use", "enc"), ("alg", "ES256")] {
        let mut published = ed25519("ed");
        published.key = key.key.clone();
        published.jwk = key.jwk.clone();
        published.jwk[member] = json!(value);
        let r = receiver(transmitter(&[&published]));
        assert_eq!(code(push(&r, &key.sign(&consent_revoked("e3", "c"))).await), "invalid_key", "{member}");
    }
    // Not with two keys in the set.
    let other = es256("k2");
    let r = receiver(transmitter(&[&key, &other]));
    assert_eq!(code(push(&r, &jwt).await), "invalid_key");
}

#[test]
fn events_translate_to_revocations() {
    let key = es256("k1");
    let mut t = transmitter(&[&key]);
    let set = |events: Value| json!({"iss": ISSUER, "events": events});
    let caep = |subject: Value| set(json!({caep::SESSION_REVOKED: {"subject": subject}}));
    let subject = |s: &str| vec![Revocation { server: None, revoked: Revoked::Subject(s.into()) }];
    assert_eq!(
        translate(&t, &caep(json!({"format": "iss_sub", "iss": ISSUER, "sub": "alice"}))).unwrap(),
        subject("alice")
    );
    assert_eq!(translate(&t, &caep(json!({"format": "opaque", "id": "bob"}))).unwrap(), subject("bob"));
    assert_eq!(
        translate(&t, &caep(json!({"user": {"format": "iss_sub", "iss": ISSUER, "sub": "carol"}, "session": {"format": "opaque", "id": "s"}}))).unwrap(),
        subject("carol")
    );
    // SSF 1.0: the subject in the SET's sub_id.
    let mut top = set(json!({caep::CREDENTIAL_CHANGE: {"change_type": "revoke", "credential_type": "password"}}));
    top["sub_id"] = json!({"format": "iss_sub", "iss": ISSUER, "sub": "dave"});
    assert_eq!(translate(&t, &top).unwrap(), subject("dave"));
    for refused in [
        json!({"format": "email", "email": "a@b.example"}),
        json!({"format": "jwt_id", "iss": ISSUER, "jti": "x"}),
        json!({}),
    ] {
        assert!(translate(&t, &caep(refused)).is_err());
    }
    // Opaque subjects as tokens: one key per server.
    t.opaque_subjects = OpaqueSubjects::Token;
    t.servers = vec!["as".into(), "as2".into()];
    let tokens = translate(&t, &caep(json!({"format": "opaque", "id": "tok"}))).unwrap();
    assert_eq!(
        tokens,
        vec![
            Revocation { server: Some("as".into()), revoked: Revoked::Token(TokenKey::new("as", "tok")) },
            Revocation { server: Some("as2".into()), revoked: Revoked::Token(TokenKey::new("as2", "tok")) },
        ]
    );
    // Open Banking: an empty event beside a resource update, or only the SET's sub.
    t.all_servers = false;
    t.servers = vec!["as".into()];
    let consent = |c: &str| vec![Revocation { server: Some("as".into()), revoked: Revoked::Consent(c.into()) }];
    let beside = set(json!({
        openbanking::RESOURCE_UPDATE: {"subject": {"http://openbanking.org.uk/rid": "88379"}},
        openbanking::CONSENT_AUTHORIZATION_REVOKED: {}}));
    assert_eq!(translate(&t, &beside).unwrap(), consent("88379"));
    let mut by_sub = set(json!({openbanking::CONSENT_AUTHORIZATION_REVOKED: {}}));
    by_sub["sub"] = json!("https://bank.example/open-banking/v3.1/aisp/account-access-consents/aac-7/");
    assert_eq!(translate(&t, &by_sub).unwrap(), consent("aac-7"));
    // Informational events revoke nothing; unknown ones refuse the SET; so does no event.
    assert_eq!(translate(&t, &set(json!({INFORMATIONAL_EVENTS[0]: {"state": "x"}}))).unwrap(), vec![]);
    assert!(translate(&t, &set(json!({"https://example.com/unknown": {}}))).is_err());
    assert!(translate(&t, &set(json!({"https://example.com/unknown": {}, openbanking::CONSENT_AUTHORIZATION_REVOKED: {"subject": {"http://openbanking.org.uk/rid": "c"}}}))).is_err());
    assert!(translate(&t, &set(json!({}))).is_err());
    assert!(translate(&t, &json!({"iss": ISSUER})).is_err());
    // A configured mapping.
    t.events = vec![
        EventMapping {
            event_type: "https://consents.example/withdrawn".into(),
            revokes: MappedKind::Consent,
            id: IdPath::Event(ClaimPath::parse("consent.id").unwrap()),
        },
        EventMapping {
            event_type: "https://idp.example/logout".into(),
            revokes: MappedKind::Subject,
            id: IdPath::Set(ClaimPath::parse("sub").unwrap()),
        },
    ];
    let mapped = set(json!({"https://consents.example/withdrawn": {"consent": {"id": "c-9"}}}));
    assert_eq!(translate(&t, &mapped).unwrap(), consent("c-9"));
    let mut logout = set(json!({"https://idp.example/logout": {}}));
    logout["sub"] = json!("erin");
    assert_eq!(
        translate(&t, &logout).unwrap(),
        vec![Revocation { server: Some("as".into()), revoked: Revoked::Subject("erin".into()) }]
    );
    assert!(translate(&t, &set(json!({"https://consents.example/withdrawn": {"consent": {}}}))).is_err());
}
