//! The grant JWT kept with a cache entry: reused, and signed again when it must be.

use std::collections::BTreeMap;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair};
use serde_json::{json, Value};

use super::*;
use crate::policy::{PolicySet, Presented, Upstream};

fn api(name: &str, forward_jwt: &str) -> Api {
    let mut upstreams = BTreeMap::new();
    upstreams.insert("bank".to_string(), Upstream { name: "bank".into(), address: "127.0.0.1:8070".parse().unwrap() });
    let source = format!(
        "[api]\nname = \"{name}\"\nprefix = \"/{name}\"\nupstream = \"bank\"\nprofile = \"obuk\"\nforward_jwt = {forward_jwt}\n[[route]]\npath = \"/accounts\"\nscopes = [\"accounts\"]\n"
    );
    PolicySet::parse_api(Path::new("p.toml"), &source, &upstreams, &["as".to_string()]).unwrap()
}

fn keys() -> Arc<KeySet> {
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref())
    );
    Arc::new(
        KeySet::new(vec![SigningKey::from_pem(Algorithm::ES256, Some("k1"), pem.as_bytes()).unwrap()], None).unwrap(),
    )
}

fn settings(keys: Arc<KeySet>) -> GrantJwtSettings {
    GrantJwtSettings { issuer: "https://gw.example".into(), keys, jwks_on_listener: false, key_files: vec![] }
}

const NOW: u64 = 1_900_000_000;

fn token(exp: u64) -> TokenInfo {
    TokenInfo::from_response(json!({
        "active": true, "exp": exp, "scope": "openid accounts", "client_id": "tpp-1", "sub": "alice",
        "cnf": {"x5t#S256": "thumb"},
        "ConsentId": "c-1", "ConsentType": "account-access-consent", "Status": "Authorised",
        "Permissions": ["ReadAccountsBasic"], "AccountIDs": ["A1", "A2"],
    }))
    .unwrap()
}

fn grant_of(api: &Api, token: &TokenInfo) -> Grant {
    let matched = crate::policy::RouteMatch {
        api,
        route: &api.routes[0],
        params: Default::default(),
        upstream_path: "/accounts".into(),
    };
    let presented = Presented { certificate_thumbprint: Some("thumb"), body: None, dpop_thumbprint: None };
    matched.evaluate(token, presented, NOW).unwrap()
}

fn payload(jwt: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

#[test]
fn claims_carry_the_grant_under_their_documented_names() {
    let api = api("gobank", "{ lifetime_seconds = 60 }");
    let token = token(NOW + 3600);
    let grant = grant_of(&api, &token);
    let slot = JwtSlot::default();
    let s = settings(keys());
    let signed = s.issue(&slot, api.forward_jwt.as_ref().unwrap(), &api, &token, &grant, NOW).unwrap();
    assert_eq!(&*signed.header, "x-fapi-grant");
    assert!(signed.identity_headers);
    let c = payload(&signed.jwt);
    assert_eq!(c["iss"], "https://gw.example");
    assert_eq!(c["aud"], "gobank");
    assert_eq!((c["sub"].as_str(), c["client_id"].as_str()), (Some("alice"), Some("tpp-1")));
    assert_eq!(c["scope"], "openid accounts");
    assert_eq!(c["consent_id"], "c-1");
    assert_eq!(c["consent_kind"], "account-access-consent");
    assert_eq!(c["consent_status"], "Authorised");
    assert_eq!(c["consent_accounts"], json!(["A1", "A2"]));
    assert_eq!(c["cnf"], json!({"x5t#S256": "thumb"}));
    assert_eq!((c["iat"].as_u64(), c["exp"].as_u64()), (Some(NOW), Some(NOW + 60)));
    assert_eq!(c["jti"].as_str().unwrap().len(), 36);
}

#[test]
fn kept_until_half_its_life_then_signed_again_never_past_the_token() {
    let api = api("gobank", "{ lifetime_seconds = 60 }");
    let forward = api.forward_jwt.as_ref().unwrap();
    let token = token(NOW + 3600);
    let grant = grant_of(&api, &token);
    let slot = JwtSlot::default();
    let s = settings(keys());
    let first = s.issue(&slot, forward, &api, &token, &grant, NOW).unwrap().jwt;
    assert_eq!(s.issue(&slot, forward, &api, &token, &grant, NOW + 29).unwrap().jwt, first, "reused");
    let second = s.issue(&slot, forward, &api, &token, &grant, NOW + 30).unwrap().jwt;
    assert_ne!(second, first, "signed again half-way");
    assert_ne!(payload(&second)["jti"], payload(&first)["jti"]);
    // A token expiring sooner than the lifetime bounds the JWT.
    let short = self::token(NOW + 10);
    let jwt = s.issue(&JwtSlot::default(), forward, &api, &short, &grant, NOW).unwrap().jwt;
    assert_eq!(payload(&jwt)["exp"].as_u64(), Some(NOW + 10));
}

#[test]
fn never_shared_between_apis_or_across_key_sets() {
    let a = api("gobank", "{}");
    let b = api("otherbank", "{ header = \"x-bank-grant\", identity_headers = false }");
    let token = token(NOW + 3600);
    let slot = JwtSlot::default();
    let s = settings(keys());
    let ga = grant_of(&a, &token);
    let gb = grant_of(&b, &token);
    let at_a = s.issue(&slot, a.forward_jwt.as_ref().unwrap(), &a, &token, &ga, NOW).unwrap();
    let at_b = s.issue(&slot, b.forward_jwt.as_ref().unwrap(), &b, &token, &gb, NOW).unwrap();
    assert_ne!(at_a.jwt, at_b.jwt);
    assert_eq!(payload(&at_b.jwt)["aud"], "otherbank");
    assert_eq!((&*at_b.header, at_b.identity_headers), ("x-bank-grant", false));
    // Both stay kept.
    assert_eq!(s.issue(&slot, a.forward_jwt.as_ref().unwrap(), &a, &token, &ga, NOW + 1).unwrap().jwt, at_a.jwt);
    assert_eq!(s.issue(&slot, b.forward_jwt.as_ref().unwrap(), &b, &token, &gb, NOW + 1).unwrap().jwt, at_b.jwt);
    // New keys (a reload, a rotation): signed again.
    let rotated = settings(keys());
    let again = rotated.issue(&slot, a.forward_jwt.as_ref().unwrap(), &a, &token, &ga, NOW + 1).unwrap();
    assert_ne!(again.jwt, at_a.jwt);
}

#[test]
fn forward_jwt_settings_are_checked() {
    for (setting, expected) in [
        ("{ header = \"authorization\" }", "needs for itself"),
        ("{ header = \"x bad\" }", "not a valid header name"),
        ("{ lifetime_seconds = 0 }", "between 1 and"),
        ("{ colour = 1 }", "unknown field"),
    ] {
        let mut upstreams = BTreeMap::new();
        upstreams
            .insert("bank".to_string(), Upstream { name: "bank".into(), address: "127.0.0.1:8070".parse().unwrap() });
        let source = format!(
            "[api]\nprefix = \"/b\"\nupstream = \"bank\"\nprofile = \"obuk\"\nforward_jwt = {setting}\n[[route]]\npath = \"/a\"\n"
        );
        let e = PolicySet::parse_api(Path::new("p.toml"), &source, &upstreams, &["as".to_string()]).unwrap_err();
        assert!(e.0.iter().any(|e| e.message.contains(expected)), "{setting}: {:?}", e.0);
    }
}
