//! The link to the authorization server under fault: every failure refuses with 503 and
//! forwards nothing; the circuit breaker opens and recovers; signed responses are checked;
//! bearer-token client authentication renews; floods of unknown tokens stay bounded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::faulty::{Fault, FaultyServer};
use common::*;

async fn world_with(server: &FaultyServer, extra: &str, capacity: u64) -> World {
    world_with_admin(server, extra, capacity, "").await
}

async fn world_with_admin(server: &FaultyServer, extra: &str, capacity: u64, admin: &str) -> World {
    // 500 ms makes the fault tests quick; a test may set its own (a flood on a loaded
    // machine needs more than 500 ms per call to be a test of the cache, not of the clock).
    let timeout = if extra.contains("timeout_ms") { "" } else { "timeout_ms = 500\n" };
    let section = format!(
        "introspection_endpoint = \"{}/introspect\"\nclient_id = \"fapi-gateway\"\nclient_secret = \"test-secret\"\n{timeout}retry_after_seconds = 3\n{extra}\n",
        server.issuer()
    );
    let options =
        Options { authorization_server: Some(section), capacity, admin_extra: admin.into(), ..Options::default() };
    World::start_with(options).await
}

/// A scripted server whose active tokens are bound to the world's TPP certificate.
async fn bound(w: &World, server: &FaultyServer) {
    let cert = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap().remove(0);
    server.bind_to(fapi_enforcement::client_identity::thumbprint(&cert));
}

async fn bound_world(extra: &str, capacity: u64) -> (World, Arc<FaultyServer>) {
    let server = FaultyServer::start(String::new()).await;
    let w = world_with(&server, extra, capacity).await;
    bound(&w, &server).await;
    (w, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_fails_closed() {
    let (w, server) = bound_world("circuit_failure_threshold = 1000", 1000).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "good-token").await.status(), 200);
    let before = w.bank_requests();
    let faults = [
        Fault::Delay(Duration::from_millis(1500)),
        Fault::Status(500),
        Fault::Status(401),
        Fault::NotJson,
        Fault::Huge,
        Fault::ActiveIsString,
        Fault::Signed, // signed, but the gateway does not expect it: not JSON
    ];
    for (i, fault) in faults.iter().enumerate() {
        server.set(fault.clone());
        let r = w.get(&w.tpp, "/gobank/accounts", &format!("token-{i}")).await;
        assert_eq!(r.headers().get("retry-after").map(|v| v.to_str().unwrap()), Some("3"), "{fault:?}");
        let (status, _, id, code) = refusal(r).await;
        assert_eq!((status, code.as_str()), (503, "UK.OBIE.UnexpectedError"), "{fault:?}");
        assert!(!id.is_empty());
    }
    server.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(refusal(w.get(&w.tpp, "/gobank/accounts", "token-refused").await).await.0, 503, "connection refused");
    assert_eq!(w.bank_requests(), before, "nothing reached the bank");
    let text = w.admin("/metrics").await.1;
    for kind in ["timeout", "status", "malformed", "too_large", "unreachable"] {
        let sample = format!("fapi_gateway_introspection_errors_total{{kind=\"{kind}\",server=\"default\"}}");
        assert!(metric_value(&text, &sample) >= 1.0, "{sample}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_circuit_opens_answers_fast_and_recovers() {
    let server = FaultyServer::start(String::new()).await;
    let admin = "readiness = \"authorization_servers\"";
    let w = world_with_admin(&server, "circuit_failure_threshold = 3\ncircuit_open_seconds = 1", 1000, admin).await;
    bound(&w, &server).await;
    server.set(Fault::Status(500));
    for i in 0..3 {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", &format!("t{i}")).await.status(), 503);
    }
    assert_eq!(server.calls(), 3);
    assert_eq!(w.metric(r#"fapi_gateway_circuit_state{server="default"}"#).await, 1.0);
    let (status, _) = w.admin("/readyz").await;
    assert_eq!(status, 503);
    // Open: refused without a call.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "t9").await.status(), 503);
    assert_eq!(server.calls(), 3);
    // The server recovers; after the open period one probe closes the circuit.
    server.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "t10").await.status(), 200);
    assert_eq!(w.metric(r#"fapi_gateway_circuit_state{server="default"}"#).await, 0.0);
    assert_eq!(w.admin("/readyz").await.0, 200);
}

/// By default readiness is the listeners' only: an open circuit to the authorization server
/// (which every replica sees alike) does not take the replica out of its balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_an_open_circuit_leaves_the_gateway_ready() {
    let (w, server) = bound_world("circuit_failure_threshold = 2\ncircuit_open_seconds = 30", 1000).await;
    assert_eq!(w.admin("/readyz").await, (200, "ready\n".to_string()));
    server.set(Fault::Status(500));
    for i in 0..2 {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", &format!("t{i}")).await.status(), 503);
    }
    assert_eq!(w.metric(r#"fapi_gateway_circuit_state{server="default"}"#).await, 1.0);
    assert_eq!(w.admin("/readyz").await, (200, "ready\n".to_string()));
    // Requests are still refused with 503 while it is open: readiness changes nothing there.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "t9").await.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_responses_are_verified() {
    let server = FaultyServer::start(String::new()).await;
    let extra = format!("issuer = \"{}\"\nsigned_responses = true\ncircuit_failure_threshold = 1000", server.issuer());
    let w = world_with(&server, &extra, 1000).await;
    bound(&w, &server).await;

    server.set(Fault::Signed);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "signed-ok").await.status(), 200);
    let before = w.bank_requests();
    for (i, fault) in [Fault::SignedBadSignature, Fault::SignedUnknownKey, Fault::SignedWrongIssuer, Fault::None]
        .into_iter()
        .enumerate()
    {
        server.set(fault.clone());
        assert_eq!(w.get(&w.tpp, "/gobank/accounts", &format!("signed-{i}")).await.status(), 503, "{fault:?}");
    }
    assert_eq!(w.bank_requests(), before);
    let sample = r#"fapi_gateway_introspection_errors_total{kind="bad_signature",server="default"}"#;
    assert_eq!(w.metric(sample).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_client_authentication_renews_its_token_once_on_401() {
    let server = FaultyServer::start(String::new()).await;
    let section = format!(
        "issuer = \"{}\"\nclient_auth = \"bearer\"\nclient_id = \"fapi-gateway\"\nclient_secret = \"test-secret\"\ntimeout_ms = 500\n",
        server.issuer()
    );
    let w = World::start_with(Options { authorization_server: Some(section), ..Options::default() }).await;
    bound(&w, &server).await;

    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "b1").await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "b2").await.status(), 200);
    assert_eq!(server.token_calls.load(std::sync::atomic::Ordering::SeqCst), 1, "the bearer token is reused");
    server.expire_bearer();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", "b3").await.status(), 200);
    assert_eq!(server.token_calls.load(std::sync::atomic::Ordering::SeqCst), 2, "renewed once after a 401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unknown_tokens_stays_bounded() {
    let (w, server) = bound_world("circuit_failure_threshold = 1000\ntimeout_ms = 10000", 50).await;
    let mut statuses = Vec::new();
    for i in (0..300).step_by(30) {
        let batch = (i..i + 30).map(|j| {
            let w = &w;
            async move { w.get(&w.tpp, "/gobank/accounts", &format!("unknown-{j}")).await.status().as_u16() }
        });
        statuses.extend(futures::future::join_all(batch).await);
    }
    assert!(statuses.iter().all(|&s| s == 401), "{statuses:?}");
    assert_eq!(server.calls(), 300, "one call per distinct token");
    let entries = w.metric("fapi_gateway_cache_entries").await;
    assert!(entries <= 50.0, "cache holds {entries} entries with capacity 50");
    assert_eq!(w.bank_requests(), 0);
}
