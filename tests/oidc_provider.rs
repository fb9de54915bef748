//! Against a real, independently written authorization server: the certified
//! `oidc-provider` from npm (installed by `.ci/run` into tests/oidc-provider), with
//! certificate-bound opaque tokens, a consent id claim, introspection and revocation.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use serde_json::{json, Value};

struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(pki: &Path, jwks: &Path) -> Provider {
        let fixture = repo_path("tests/oidc-provider");
        assert!(
            fixture.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci --prefix tests/oidc-provider` (.ci/run does)"
        );
        let mut child = Command::new("node")
            .arg(fixture.join("server.mjs"))
            .args(["--port", "0", "--certs"])
            .arg(pki)
            .arg("--gateway-jwks")
            .arg(jwks)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed to run oidc-provider");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(ready) = line.strip_prefix("READY ") {
                    let _ = tx.send(ready.to_string());
                }
            }
        });
        let ready = rx.recv_timeout(Duration::from_secs(30)).expect("oidc-provider did not start within 30 s");
        let ready: Value = serde_json::from_str(&ready).unwrap();
        Provider { child, issuer: ready["issuer"].as_str().unwrap().to_string() }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes the gateway's private_key_jwt keys (ES256 and PS256) and their public JWKS.
fn jwt_keys(dir: &Path) -> std::path::PathBuf {
    let ec = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("jwt-es256.key"), ec.serialize_pem()).unwrap();
    let raw = ec.public_key_raw();
    let ec_jwk = json!({"kty": "EC", "crv": "P-256", "kid": "es", "use": "sig",
                        "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])});
    let script = "const {generateKeyPairSync}=require('crypto');\
        const {privateKey,publicKey}=generateKeyPairSync('rsa',{modulusLength:2048});\
        process.stdout.write(JSON.stringify({pem:privateKey.export({type:'pkcs1',format:'pem'}),jwk:publicKey.export({format:'jwk'})}))";
    let out = Command::new("node").args(["-e", script]).output().expect("node");
    let rsa: Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(dir.join("jwt-ps256.key"), rsa["pem"].as_str().unwrap()).unwrap();
    let mut rsa_jwk = rsa["jwk"].clone();
    rsa_jwk["kid"] = json!("rsa");
    rsa_jwk["use"] = json!("sig");
    let jwks = dir.join("gateway-jwks.json");
    std::fs::write(&jwks, json!({"keys": [ec_jwk, rsa_jwk]}).to_string()).unwrap();
    jwks
}

/// A certificate-bound token for `client` from the provider, carrying consent `c-1`.
async fn provider_token(p: &Provider, client: &reqwest::Client, client_id: &str) -> String {
    let r: Value = client
        .post(format!("{}/token", p.issuer))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("scope", "openid accounts"),
            ("consent_id", "c-1"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["access_token"].as_str().unwrap_or_else(|| panic!("no token: {r}")).to_string()
}

/// A dev PKI, the gateway's JWT keys, and oidc-provider running with them.
struct Setup {
    dir: tempfile::TempDir,
    pki: fapi_devkit::pki::DevPki,
    provider: Provider,
}

impl Setup {
    fn new() -> Setup {
        fapi_enforcement::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = fapi_devkit::pki::DevPki::at(&dir.path().join("pki"));
        pki.generate().unwrap();
        let jwks = jwt_keys(dir.path());
        let provider = Provider::start(&pki.dir, &jwks);
        Setup { dir, pki, provider }
    }

    /// A world whose gateway introspects at the provider, authenticating with `auth`.
    async fn world(&self, auth: &str) -> World {
        let section =
            format!("issuer = \"{}\"\nca = \"certs/ca.pem\"\ntimeout_ms = 3000\n{auth}\n", self.provider.issuer);
        let options = Options {
            authorization_server: Some(section),
            pki: Some(self.pki.dir.clone()),
            revocation_hook: false,
            ..Options::default()
        };
        World::start_with(options).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_oidc_provider_pass_with_their_certificate_only_for_every_client_auth_method() {
    let setup = Setup::new();
    let key = |name: &str| setup.dir.path().join(name).display().to_string();
    let methods = [
        ("client_secret_basic", "client_id = \"gw-basic\"\nclient_auth = \"client_secret_basic\"\nclient_secret = \"gw-basic-secret\"".to_string()),
        ("client_secret_post", "client_id = \"gw-post\"\nclient_auth = \"client_secret_post\"\nclient_secret = \"gw-post-secret\"".to_string()),
        (
            "private_key_jwt ES256",
            format!("client_id = \"gw-jwt\"\nclient_auth = \"private_key_jwt\"\nprivate_key = \"{}\"\nsigning_alg = \"ES256\"\nkey_id = \"es\"", key("jwt-es256.key")),
        ),
        (
            "private_key_jwt PS256",
            format!("client_id = \"gw-jwt\"\nclient_auth = \"private_key_jwt\"\nprivate_key = \"{}\"\nsigning_alg = \"PS256\"\nkey_id = \"rsa\"", key("jwt-ps256.key")),
        ),
        (
            "tls_client_auth",
            "client_id = \"gw-mtls\"\nclient_auth = \"tls_client_auth\"\nclient_certificate = \"certs/gateway-client.pem\"\nclient_key = \"certs/gateway-client.key\"".to_string(),
        ),
    ];
    for (method, auth) in methods {
        let w = setup.world(&auth).await;
        let token = provider_token(&setup.provider, &w.tpp, "financroo").await;
        let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
        assert_eq!(r.status(), 200, "{method}: {}", r.text().await.unwrap());
        let seen = w.fixtures.go_bank.last_headers().unwrap();
        assert_eq!(seen["x-consent-id"], "c-1", "{method}");
        assert_eq!(seen["x-subject"], "alice", "{method}");
        assert_eq!(seen["x-client-id"], "financroo", "{method}");
        let (status, challenge, _, _) = refusal(w.get(&w.other_tpp, "/gobank/accounts", &token).await).await;
        assert_eq!(status, 401, "{method}: another certificate");
        assert!(challenge.contains("invalid_token"), "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_at_oidc_provider_fails_once_evicted_through_the_admin_endpoint() {
    let setup = Setup::new();
    let provider = &setup.provider;
    let w = setup.world("client_id = \"gw-basic\"\nclient_secret = \"gw-basic-secret\"").await;
    let token = provider_token(provider, &w.tpp, "financroo").await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);

    let r = w
        .tpp
        .post(format!("{}/token/revocation", provider.issuer))
        .form(&[("client_id", "financroo"), ("token", token.as_str()), ("token_type_hint", "access_token")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Still cached...
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    // ...until the admin endpoint drops it.
    let r = reqwest::Client::new()
        .post(format!("http://{}/revocations", w.admin_addr))
        .bearer_auth(ADMIN_SECRET)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"evicted":1}"#);
    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/gobank/accounts", &token).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"));
}

/// oidc-provider's tokens carry the consent id as the TPP asked for it (`consent_id`) and
/// nothing else of a consent: onboarded with the generic profile, the consent id required,
/// its status, kind, expiry and accounts not checked (README "Bring your own authorization
/// server").
const OIDC_PROVIDER_API: &str = r#"
[api]
name = "oidcbank"
prefix = "/oidcbank"
upstream = "hyperscalebank"
profile = "generic"
audiences = ["https://api.oidcbank.example"]

[api.defaults]
scopes = ["accounts"]

[claims]
consent_id = "consent_id"
consent_type = false
status = false
expiration = false
accounts = false

[[route]]
path = "/accounts"
"#;

/// A token for `resource` (RFC 8707), with the consent `consent` when given.
async fn resource_token(p: &Provider, client: &reqwest::Client, resource: &str, consent: Option<&str>) -> String {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", "financroo"),
        ("scope", "openid accounts"),
        ("resource", resource),
    ];
    if let Some(c) = consent {
        form.push(("consent_id", c));
    }
    let r: Value = client.post(format!("{}/token", p.issuer)).form(&form).send().await.unwrap().json().await.unwrap();
    r["access_token"].as_str().unwrap_or_else(|| panic!("no token: {r}")).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oidc_provider_is_onboarded_with_the_generic_profile_requiring_only_the_consent_id() {
    let setup = Setup::new();
    let section = format!(
        "issuer = \"{}\"\nca = \"certs/ca.pem\"\ntimeout_ms = 3000\nclient_id = \"gw-basic\"\nclient_secret = \"gw-basic-secret\"\n",
        setup.provider.issuer
    );
    let options = Options {
        authorization_server: Some(section),
        pki: Some(setup.pki.dir.clone()),
        revocation_hook: false,
        policy_appends: vec![("oidcbank.toml".into(), OIDC_PROVIDER_API.into())],
        ..Options::default()
    };
    let w = World::start_with(options).await;
    let provider = &setup.provider;

    // A token with the consent claim: allowed, though the response names no status,
    // expiry or accounts; the bank is told the consent.
    let token = resource_token(provider, &w.tpp, "https://api.oidcbank.example", Some("c-42")).await;
    let before = w.fixtures.hyperscale_bank.requests();
    let r = w.get(&w.tpp, "/oidcbank/accounts", &token).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(w.fixtures.hyperscale_bank.requests(), before + 1);
    let seen = w.fixtures.hyperscale_bank.last_headers().unwrap();
    assert_eq!(seen["x-consent-id"], "c-42");
    assert_eq!(seen["x-client-id"], "financroo");
    assert!(seen.get("x-consent-accounts").is_none());

    // A token without it: refused, saying what is missing; nothing reaches the bank.
    let token = resource_token(provider, &w.tpp, "https://api.oidcbank.example", None).await;
    let r = w.get(&w.tpp, "/oidcbank/accounts", &token).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Resource.ConsentMismatch");
    let message = body["Message"].as_str().unwrap();
    assert!(message.contains("carries no consent") && message.contains("`consent_id`"), "{message}");
    assert_eq!(w.fixtures.hyperscale_bank.requests(), before + 1);

    // A token for another API (Go Bank's audience) is not taken here.
    let token = resource_token(provider, &w.tpp, "https://api.gobank.example", Some("c-42")).await;
    let (status, challenge, _, _) = refusal(w.get(&w.tpp, "/oidcbank/accounts", &token).await).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
}
