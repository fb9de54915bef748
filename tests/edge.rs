//! The FAPI edge: the TLS profile, CRLs, certificates from a load balancer (RFC 9440),
//! DPoP (RFC 9449), FAPI headers and request hygiene.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rustls::crypto::ring::cipher_suite;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A TLS 1.2 or 1.3 handshake with only `suite` offered, presenting the TPP certificate;
/// on success, the status line of a request.
async fn handshake(w: &World, suite: rustls::SupportedCipherSuite) -> Result<String, String> {
    raw_request(w, suite, b"GET /gobank/accounts HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fapi_tls_profile_refuses_other_tls12_suites() {
    let w = World::start().await;
    for permitted in [
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ] {
        let status = handshake(&w, permitted).await.unwrap_or_else(|e| panic!("{:?}: {e}", permitted.suite()));
        assert_eq!(status, "HTTP/1.1 401 Unauthorized", "{:?}", permitted.suite());
    }
    let forbidden = handshake(&w, cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256).await;
    assert!(forbidden.is_err(), "TLS 1.2 ChaCha20 must be refused: {forbidden:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_refuses_a_revoked_client_certificate_after_a_reload() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    assert_eq!(
        w.get(&w.other_tpp, "/gobank/accounts", &token).await.status(),
        401,
        "handshake passes, binding does not"
    );
    let config = w.dir.path().join("gateway.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "client_ca = \"certs/ca.pem\"\n",
            "client_ca = \"certs/ca.pem\"\ncrls = [\"certs/other-tpp-revoked.crl.pem\"]\n",
        ),
    )
    .unwrap();
    w.gateway.reloader.reload().unwrap();
    let revoked = client(&w.pki.ca(), Some((&w.pki.other_tpp_cert(), &w.pki.other_tpp_key())), false);
    assert!(revoked.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await.is_err(), "revoked certificate");
    let good = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
    assert_eq!(good.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap().status(), 200);
}

fn behind_proxy(trusted: &str, header: &str) -> Options {
    Options {
        listener_extra: format!("mode = \"behind_proxy\"\ntls = false\ntrusted_proxies = [\"{trusted}\"]\nclient_cert_header = \"{header}\""),
        ..Options::default()
    }
}

fn der(path: &std::path::Path) -> Vec<u8> {
    fapi_enforcement::client_identity::read_certificates(path).unwrap().remove(0).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_load_balancer_the_certificate_comes_in_rfc9440_headers() {
    let w = World::start_with(behind_proxy("127.0.0.1/32", "rfc9440")).await;
    let (_, token) = w.go_bank_token().await;
    let url = format!("http://{}/gobank/accounts", w.gateway_addr);
    let plain = reqwest::Client::new();
    let send = |cert: Option<String>| {
        let mut r = plain.get(&url).bearer_auth(&token);
        if let Some(c) = cert {
            r = r.header("client-cert", c);
        }
        r.send()
    };
    let tpp = format!(":{}:", STANDARD.encode(der(&w.pki.tpp_cert())));
    let r = send(Some(tpp)).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(w.fixtures.go_bank.last_headers().unwrap().get("client-cert").is_none(), "not forwarded");
    let before = w.bank_requests();
    assert_eq!(refusal(send(None).await.unwrap()).await.0, 401, "no certificate: unbound");
    let other = format!(":{}:", STANDARD.encode(der(&w.pki.other_tpp_cert())));
    assert_eq!(refusal(send(Some(other)).await.unwrap()).await.0, 401, "another TPP's certificate");
    let stranger_pki = fapi_devkit::pki::DevPki::at(&w.dir.path().join("stranger"));
    stranger_pki.generate().unwrap();
    let stranger = format!(":{}:", STANDARD.encode(der(&stranger_pki.tpp_cert())));
    assert_eq!(
        refusal(send(Some(stranger)).await.unwrap()).await.0,
        401,
        "a certificate the CA bundle does not vouch for"
    );
    assert_eq!(refusal(send(Some("not a byte sequence".into())).await.unwrap()).await.0, 400);
    assert_eq!(w.bank_requests(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_headers_from_an_untrusted_peer_are_ignored() {
    let w = World::start_with(behind_proxy("127.0.0.2/32", "rfc9440")).await;
    let (_, token) = w.go_bank_token().await;
    let tpp = format!(":{}:", STANDARD.encode(der(&w.pki.tpp_cert())));
    let r = reqwest::Client::new()
        .get(format!("http://{}/gobank/accounts", w.gateway_addr))
        .bearer_auth(&token)
        .header("client-cert", tpp)
        .send()
        .await
        .unwrap();
    let (status, challenge, _, _) = refusal(r).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    assert_eq!(w.bank_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_x_ssl_client_cert_header_works_too() {
    let w = World::start_with(behind_proxy("127.0.0.0/8", "x-ssl-client-cert")).await;
    let (_, token) = w.go_bank_token().await;
    let pem = std::fs::read_to_string(w.pki.tpp_cert()).unwrap();
    let escaped = percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    let r = reqwest::Client::new()
        .get(format!("http://{}/gobank/accounts", w.gateway_addr))
        .bearer_auth(&token)
        .header("x-ssl-client-cert", escaped)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(w.fixtures.go_bank.last_headers().unwrap().get("x-ssl-client-cert").is_none());
}

/// A DPoP key and proofs made with it (jsonwebtoken, ring).
struct DpopKey {
    encoding: EncodingKey,
    alg: Algorithm,
    jwk: Value,
}

impl DpopKey {
    fn es256() -> DpopKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let raw = pair.public_key_raw();
        DpopKey {
            encoding: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
            alg: Algorithm::ES256,
            jwk: json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&raw[1..33]), "y": URL_SAFE_NO_PAD.encode(&raw[33..65])}),
        }
    }

    fn ed25519() -> DpopKey {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        DpopKey {
            encoding: EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap(),
            alg: Algorithm::EdDSA,
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(pair.public_key_raw())}),
        }
    }

    /// An RSA key (from Node.js, which the tests' other fixtures need anyway) for RS256 or PS256.
    fn rsa(alg: Algorithm) -> DpopKey {
        let script = "const {generateKeyPairSync}=require('crypto');\
            const {privateKey,publicKey}=generateKeyPairSync('rsa',{modulusLength:2048});\
            process.stdout.write(JSON.stringify({pem:privateKey.export({type:'pkcs1',format:'pem'}),jwk:publicKey.export({format:'jwk'})}))";
        let out = std::process::Command::new("node").args(["-e", script]).output().expect("node");
        let key: Value = serde_json::from_slice(&out.stdout).unwrap();
        DpopKey {
            encoding: EncodingKey::from_rsa_pem(key["pem"].as_str().unwrap().as_bytes()).unwrap(),
            alg,
            jwk: json!({"kty": "RSA", "n": key["jwk"]["n"], "e": key["jwk"]["e"]}),
        }
    }

    fn proof(&self, method: &str, url: &str, token: Option<&str>, iat: u64, extra: Value) -> String {
        let mut header = Header::new(self.alg);
        header.typ = Some("dpop+jwt".into());
        header.jwk = Some(serde_json::from_value(self.jwk.clone()).unwrap());
        let mut claims = json!({"jti": uuid::Uuid::new_v4().to_string(), "htm": method, "htu": url, "iat": iat});
        if let Some(t) = token {
            claims["ath"] = json!(URL_SAFE_NO_PAD.encode(Sha256::digest(t.as_bytes())));
        }
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        jsonwebtoken::encode(&header, &claims, &self.encoding).unwrap()
    }
}

fn now() -> u64 {
    fapi_enforcement::introspection::unix_now()
}

/// Go Bank's /accounts open to DPoP-bound tokens too.
fn dpop_options(config_extra: &str) -> Options {
    Options {
        policy_appends: vec![(
            "gobank.toml".into(),
            "\n[[route]]\npath = \"/accounts\"\nscopes = [\"accounts\"]\npermissions_any = [\"ReadAccountsBasic\", \"ReadAccountsDetail\"]\nbinding = \"mtls_or_dpop\"\n".into(),
        )],
        config_extra: config_extra.into(),
        // The URL a proof must name comes from the Host only once it matched these.
        listener_extra: "server_names = [\"127.0.0.1\"]".into(),
        ..Options::default()
    }
}

/// A DPoP-bound token for `key` from the mock authorization server.
async fn dpop_token(w: &World, key: &DpopKey) -> String {
    let consent = w.consent(&w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
    let token_url = w.as_url("/token");
    let proof = key.proof("POST", &token_url, None, now(), json!({}));
    let body: Value = w
        .tpp
        .post(&token_url)
        .header("dpop", proof)
        .form(&[("grant_type", "client_credentials"), ("scope", "openid accounts"), ("consent_id", consent.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["token_type"], "DPoP", "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_proofs_are_checked_as_rfc9449_says() {
    let w = World::start_with(dpop_options("")).await;
    let key = DpopKey::es256();
    let token = dpop_token(&w, &key).await;
    let url = w.url("/gobank/accounts");
    let call = |proof: String, scheme: &'static str| {
        w.tpp
            .get(w.url("/gobank/accounts"))
            .header("authorization", format!("{scheme} {token}"))
            .header("dpop", proof)
            .send()
    };

    assert_eq!(call(key.proof("GET", &url, Some(&token), now(), json!({})), "DPoP").await.unwrap().status(), 200);
    let before = w.bank_requests();
    let refused = |r: reqwest::Response| async move {
        let challenge =
            r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        (r.status().as_u16(), challenge)
    };
    let cases: Vec<(&str, String, &str)> = vec![
        ("wrong method", key.proof("POST", &url, Some(&token), now(), json!({})), "invalid_dpop_proof"),
        (
            "wrong URL",
            key.proof("GET", &w.url("/gobank/balances"), Some(&token), now(), json!({})),
            "invalid_dpop_proof",
        ),
        ("stale iat", key.proof("GET", &url, Some(&token), now() - 600, json!({})), "invalid_dpop_proof"),
        ("iat from the future", key.proof("GET", &url, Some(&token), now() + 600, json!({})), "invalid_dpop_proof"),
        ("wrong ath", key.proof("GET", &url, Some("another-token"), now(), json!({})), "invalid_dpop_proof"),
        ("another key", DpopKey::es256().proof("GET", &url, Some(&token), now(), json!({})), "error=\"invalid_token\""),
        ("not a JWT", "garbage".to_string(), "invalid_dpop_proof"),
    ];
    for (name, proof, expected) in cases {
        let (status, challenge) = refused(call(proof, "DPoP").await.unwrap()).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            challenge.starts_with("DPoP algs=\"ES256 PS256 RS256 EdDSA\"") && challenge.contains(expected),
            "{name}: {challenge}"
        );
    }
    // A replayed proof.
    let proof = key.proof("GET", &url, Some(&token), now(), json!({}));
    assert_eq!(call(proof.clone(), "DPoP").await.unwrap().status(), 200);
    assert_eq!(refused(call(proof, "DPoP").await.unwrap()).await.0, 401, "replayed jti");
    // A DPoP-bound token as a bearer token, with or without a proof.
    let (status, challenge) = refused(w.tpp.get(&url).bearer_auth(&token).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("invalid_token"), "{challenge}");
    // Missing proof with the DPoP scheme.
    let r = w.tpp.get(&url).header("authorization", format!("DPoP {token}")).send().await.unwrap();
    assert_eq!(refused(r).await.0, 401);
    // A proof made for another server, sent with that server's Host: the Host is not one
    // the gateway serves, so it never becomes the expected htu (it did before: 200).
    let elsewhere = "https://bank.elsewhere.example/gobank/accounts";
    let r = w
        .tpp
        .get(&url)
        .header("host", "bank.elsewhere.example")
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", elsewhere, Some(&token), now(), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 421, "misdirected");
    assert!(r.headers().get("x-fapi-interaction-id").is_some());
    assert_eq!(w.bank_requests(), before + 1, "only the one valid fresh proof got through");

    // RSA keys (RS256, PS256) work too.
    for alg in [Algorithm::RS256, Algorithm::PS256] {
        let rsa = DpopKey::rsa(alg);
        let rsa_token = dpop_token(&w, &rsa).await;
        let r = w
            .tpp
            .get(&url)
            .header("authorization", format!("DPoP {rsa_token}"))
            .header("dpop", rsa.proof("GET", &url, Some(&rsa_token), now(), json!({})))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{alg:?}");
    }
    // EdDSA keys work too.
    let ed = DpopKey::ed25519();
    let ed_token = dpop_token(&w, &ed).await;
    let r = w
        .tpp
        .get(&url)
        .header("authorization", format!("DPoP {ed_token}"))
        .header("dpop", ed.proof("GET", &url, Some(&ed_token), now(), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A DPoP token on an mTLS-only route is refused.
    let r = w
        .tpp
        .get(w.url("/gobank/balances"))
        .header("authorization", format!("DPoP {ed_token}"))
        .header("dpop", ed.proof("GET", &w.url("/gobank/balances"), Some(&ed_token), now(), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dpop_nonces_are_handed_out_and_required_when_configured() {
    let w = World::start_with(dpop_options("[dpop]\nrequire_nonce = true\n")).await;
    let key = DpopKey::es256();
    let token = dpop_token(&w, &key).await;
    let url = w.url("/gobank/accounts");
    let r = w
        .tpp
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &url, Some(&token), now(), json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let nonce = r.headers()["dpop-nonce"].to_str().unwrap().to_string();
    assert!(r.headers()["www-authenticate"].to_str().unwrap().contains("use_dpop_nonce"));
    let r = w
        .tpp
        .get(&url)
        .header("authorization", format!("DPoP {token}"))
        .header("dpop", key.proof("GET", &url, Some(&token), now(), json!({"nonce": nonce})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fapi_headers_pass_and_hop_by_hop_headers_stop() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let r = w
        .tpp
        .get(w.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-fapi-customer-ip-address", "104.25.212.99")
        .header("x-fapi-auth-date", "Sun, 10 Sep 2017 19:43:31 UTC")
        .header("connection", "x-internal-secret")
        .header("x-internal-secret", "for-the-next-hop-only")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    assert_eq!(seen["x-fapi-customer-ip-address"], "104.25.212.99");
    assert_eq!(seen["x-fapi-auth-date"], "Sun, 10 Sep 2017 19:43:31 UTC");
    assert!(seen.get("x-internal-secret").is_none());
    assert!(seen.get("proxy-authorization").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_requests_are_refused_before_anything_else() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    let mut many = w.tpp.get(w.url("/gobank/accounts")).bearer_auth(&token);
    for i in 0..120 {
        many = many.header(format!("x-extra-{i}"), "1");
    }
    assert_eq!(refusal(many.send().await.unwrap()).await.0, 431);
    let big = w.tpp.get(w.url("/gobank/accounts")).bearer_auth(&token).header("x-big", "a".repeat(20_000));
    assert_eq!(refusal(big.send().await.unwrap()).await.0, 431);
    // A declared 2 MiB body is refused from its headers, before a byte of it is read.
    let request = format!(
        "POST /gobank/domestic-payments HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nContent-Length: 2097152\r\nConnection: close\r\n\r\n"
    );
    let status = raw_request(&w, cipher_suite::TLS13_AES_128_GCM_SHA256, request.as_bytes()).await.unwrap();
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    assert_eq!(w.bank_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_have_its_own_body_limit() {
    let options = Options {
        policy_appends: vec![(
            "gobank.toml".into(),
            "\n[[route]]\nmethods = [\"POST\"]\npath = \"/uploads\"\nconsent = false\npublic = true\nmax_body_bytes = 100\n\
             \n[[route]]\nmethods = [\"POST\"]\npath = \"/imports\"\nconsent = false\npublic = true\nmax_body_bytes = 5000\n"
                .into(),
        )],
        config_extra: "[limits]\nmax_body_bytes = 1000\n".into(),
        ..Options::default()
    };
    let w = World::start_with(options).await;
    let post = |n: usize| w.tpp.post(w.url("/gobank/uploads")).body(vec![b'x'; n]).send();
    // Within the limit it is forwarded (the mock bank has no such path: its 404).
    let r = post(50).await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("UK.OBIE"), "the bank answered, not the gateway");
    let request =
        "POST /gobank/uploads HTTP/1.1\r\nHost: localhost\r\nContent-Length: 200\r\nConnection: close\r\n\r\n";
    let status = raw_request(&w, cipher_suite::TLS13_AES_128_GCM_SHA256, request.as_bytes()).await.unwrap();
    assert_eq!(status, "HTTP/1.1 413 Payload Too Large");
    // A route's limit replaces the global one (1000 here), also when it is larger.
    let r = w.tpp.post(w.url("/gobank/imports")).body(vec![b'x'; 2000]).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(!r.text().await.unwrap().contains("UK.OBIE"), "the bank answered, not the gateway");
    let declared = |path: &str, n: usize| {
        format!("POST /gobank/{path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
    };
    for (path, n) in [("imports", 6000), ("domestic-payments", 2000)] {
        let status =
            raw_request(&w, cipher_suite::TLS13_AES_128_GCM_SHA256, declared(path, n).as_bytes()).await.unwrap();
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{path} with {n} bytes");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_external_url_proofs_name_it_whatever_the_host() {
    let mut options = dpop_options("[dpop]\nexternal_url = \"https://api.gobank.example\"\n");
    options.listener_extra = String::new();
    let w = World::start_with(options).await;
    let key = DpopKey::es256();
    let token = dpop_token(&w, &key).await;
    let call = |htu: String| {
        w.tpp
            .get(w.url("/gobank/accounts"))
            .header("authorization", format!("DPoP {token}"))
            .header("dpop", key.proof("GET", &htu, Some(&token), now(), json!({})))
            .send()
    };
    assert_eq!(call(w.url("/gobank/accounts")).await.unwrap().status(), 401, "the Host's URL is not the gateway's");
    assert_eq!(call("https://api.gobank.example/gobank/accounts".into()).await.unwrap().status(), 200);
}
