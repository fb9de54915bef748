//! Routing against the real gateway: 405 with `Allow`, a disabled route answered as an
//! unknown route of its API, and catch-all routes that yield to literal ones and cannot be
//! escaped with dot segments or encodings.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An API whose accounts are served by one catch-all, except one account's own route.
const CATCH_ALL_API: &str = r#"
[api]
name = "catchall"
prefix = "/catchall"
upstream = "hyperscalebank"
profile = "generic"
audiences = ["https://api.hyperscalebank.example"]

[api.defaults]
scopes = ["accounts"]

[[route]]
path = "/accounts/{Rest...}"

[[route]]
path = "/accounts/{AccountId}"
account_param = "AccountId"
"#;

async fn world() -> World {
    let options =
        Options { policy_appends: vec![("catchall.toml".into(), CATCH_ALL_API.into())], ..Options::default() };
    World::start_with(options).await
}

async fn body(r: reqwest::Response) -> (u16, Value) {
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Sends `target` as written (no client-side normalisation); the status code.
async fn raw_get(w: &World, target: &str, token: &str) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap();
    let key = fapi_enforcement::client_identity::read_private_key(&w.pki.tpp_key()).unwrap();
    let config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).unwrap();
    let tcp = tokio::net::TcpStream::connect(w.gateway_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap();
    let request = format!(
        "GET {target} HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nconnection: close\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_names_the_allowed_methods_and_a_disabled_route_is_an_unknown_route_of_its_api() {
    let w = world().await;
    let (_, token) = w.go_bank_token().await;
    let r = w.tpp.post(w.url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["allow"], "GET");
    assert!(r.headers().contains_key("x-fapi-interaction-id"));
    let r = w.tpp.delete(w.url("/gobank/domestic-payments/p-1")).bearer_auth(&token).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["allow"].to_str().unwrap()), (405, "GET"));

    // `/gobank/offers` is disabled in policies/gobank.toml: answered like a path Go Bank
    // never had, not as if there were no API.
    let disabled = body(w.get(&w.tpp, "/gobank/offers", &token).await).await;
    let unknown = body(w.get(&w.tpp, "/gobank/no-such-thing", &token).await).await;
    let elsewhere = body(w.get(&w.tpp, "/no-such-api/offers", &token).await).await;
    assert_eq!(disabled.0, 404);
    assert_eq!(disabled.1["Message"], unknown.1["Message"]);
    assert_eq!(disabled.1["Errors"], unknown.1["Errors"]);
    assert_eq!(disabled.1["Message"], "this API serves no resource at this path");
    assert_eq!(elsewhere.1["Message"], "no API is served at this path");
    assert_eq!(disabled.1["Errors"][0]["ErrorCode"], "UK.OBIE.Resource.NotFound");
    assert_eq!(w.bank_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_all_route_forwards_what_literal_routes_leave_and_cannot_be_escaped() {
    let w = world().await;
    let consent = w.consent(&w.tpp, "hyperscalebank", &[], "alice", &["HS-1001"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    let bank = || w.fixtures.hyperscale_bank.requests();

    // Under the catch-all: forwarded as is.
    let r = w.get(&w.tpp, "/catchall/accounts/HS-1001/balances", &token).await;
    assert_eq!(r.status(), 200);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["Data"]["Balance"][0]["AccountId"], "HS-1001");
    assert_eq!(bank(), 1);
    // The one-segment route wins over the catch-all, with its account check.
    assert_eq!(w.get(&w.tpp, "/catchall/accounts/HS-1001", &token).await.status(), 200);
    assert_eq!(bank(), 2);
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/catchall/accounts/HS-1002", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"));
    // The catch-all needs one segment at least, and the route's checks apply.
    assert_eq!(w.get(&w.tpp, "/catchall/accounts", &token).await.status(), 404);
    let plain = w.token(&w.tpp, Some(&consent), "openid", None).await;
    assert_eq!(w.get(&w.tpp, "/catchall/accounts/HS-1001/balances", &plain).await.status(), 403);
    assert_eq!(bank(), 2);

    // Dot segments and encodings that would reach another account's route (or climb out
    // of the API) are refused before anything is forwarded.
    for target in [
        "/catchall/accounts/HS-1001/../HS-1002",
        "/catchall/accounts/x/../../../gobank/accounts",
        "/catchall/accounts/HS-1001/%2e%2e/HS-1002",
        "/catchall/accounts/HS-1001%2F..%2FHS-1002",
        "/catchall/accounts/HS-1001/..;/HS-1002",
        "/catchall/accounts/HS-1001//balances",
        "/catchall/accounts/HS-1001%5c..%5cHS-1002",
    ] {
        assert_eq!(raw_get(&w, target, &token).await, 400, "{target}");
    }
    assert_eq!(raw_get(&w, "/catchall/accounts/HS-1001/balances", &token).await, 200);
    assert_eq!(bank(), 3);
}
