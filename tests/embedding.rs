//! The embedding example (`examples/embedding.rs`), built into this test and run: a
//! pingora proxy of one's own, enforcing with the library, in front of the mock bank.

mod common;

#[path = "../examples/embedding.rs"]
#[allow(dead_code)]
mod embedding;

use common::*;
use fapi_enforcement::config::GatewayConfig;
use pingora_core::services::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pingora_proxy_of_ones_own_enforces_with_the_library() {
    // The world's fixtures and configuration; our own proxy on a port of its own.
    let w = World::start().await;
    let mut config = GatewayConfig::load(&w.dir.path().join("gateway.toml")).unwrap();
    let address = free_port();
    config.listener.address = address;
    let mut service = embedding::proxy_service(config).unwrap();
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(async move { service.start_service(None, stopped, 1).await });
    fapi_gateway_server::server::wait_for_listener(address).await.unwrap();
    let url = |path: &str| format!("https://{address}{path}");

    let (consent, token) = w.go_bank_token().await;
    let before = w.bank_requests();
    let r = w.tpp.get(url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-fapi-interaction-id").is_none(), "the example leaves response headers to its host");
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    assert_eq!(seen["x-consent-id"], consent.as_str());
    assert_eq!(seen["x-consent-accounts"], "GB-1001");
    assert!(seen.get("authorization").is_none(), "the token stays at the proxy");
    assert_eq!(w.bank_requests(), before + 1);

    // Refusals, as the library writes them, and nothing reaches the bank.
    let cases = [
        (w.tpp.get(url("/gobank/accounts/GB-1002")).bearer_auth(&token), 403, "UK.OBIE.Resource.ConsentMismatch"),
        (w.other_tpp.get(url("/gobank/accounts")).bearer_auth(&token), 401, "UK.OBIE.Header.Invalid"),
        (w.tpp.get(url("/gobank/accounts")), 401, "UK.OBIE.Header.Missing"),
        (w.tpp.get(url("/gobank/accounts")).bearer_auth("not-a-token"), 401, "UK.OBIE.Header.Invalid"),
        (w.tpp.get(url("/gobank/accounts")).bearer_auth(&token).header("x_consent_id", "forged"), 200, ""),
    ];
    for (request, status, code) in cases {
        let r = request.send().await.unwrap();
        if status == 200 {
            assert_eq!(r.status(), 200);
            continue;
        }
        let (got, challenge, id, got_code) = refusal(r).await;
        assert_eq!((got, got_code.as_str()), (status, code));
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        assert!(!id.is_empty());
    }
    assert_eq!(w.bank_requests(), before + 2, "only the allowed requests reached the bank");
    assert!(w.fixtures.go_bank.last_headers().unwrap().get("x_consent_id").is_none());
    running.abort();
}
