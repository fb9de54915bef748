//! Operating the gateway: metrics, the admin endpoints, hot reload, certificate rotation,
//! logs and graceful shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

async fn wait_for_metric(w: &World, sample: &str, value: f64) {
    for _ in 0..100 {
        if w.metric(sample).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{sample} never became {value}: {}", w.admin("/metrics").await.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_every_request_exactly() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.tpp.get(w.url("/gobank/accounts")).send().await.unwrap().status(), 401);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1002", &token).await.status(), 403);
    assert_eq!(w.get(&w.tpp, "/gobank/nope", &token).await.status(), 404);

    let (status, text) = w.admin("/metrics").await;
    assert_eq!(status, 200);
    let expect = [
        (
            r#"fapi_gateway_requests_total{api="gobank",decision="allowed",method="GET",route="/accounts",status="200"}"#,
            2.0,
        ),
        (
            r#"fapi_gateway_requests_total{api="gobank",decision="missing_token",method="GET",route="/accounts",status="401"}"#,
            1.0,
        ),
        (
            r#"fapi_gateway_requests_total{api="gobank",decision="account_not_granted",method="GET",route="/accounts/{AccountId}",status="403"}"#,
            1.0,
        ),
        (r#"fapi_gateway_requests_total{api="",decision="no_route",method="",route="",status="404"}"#, 1.0),
        (r#"fapi_gateway_cache_lookups_total{result="miss"}"#, 1.0),
        (r#"fapi_gateway_cache_lookups_total{result="hit"}"#, 2.0),
        (r#"fapi_gateway_introspection_duration_seconds_count{outcome="ok",server="default"}"#, 1.0),
        (r#"fapi_gateway_upstream_duration_seconds_count{api="gobank"}"#, 2.0),
        (r#"fapi_gateway_request_duration_seconds_count{api="gobank"}"#, 4.0),
        ("fapi_gateway_decision_duration_seconds_count", 5.0),
        (r#"fapi_gateway_request_duration_seconds_count{api=""}"#, 1.0),
        ("fapi_gateway_cache_entries", 1.0),
        (r#"fapi_gateway_circuit_state{server="default"}"#, 0.0),
        ("fapi_gateway_config_generation", 1.0),
        ("fapi_gateway_config_last_reload_success", 1.0),
    ];
    for (sample, value) in expect {
        assert!(text.lines().any(|l| l.starts_with(sample)) || value == 0.0, "{sample} missing:\n{text}");
        assert_eq!(metric_value(&text, sample), value, "{sample}");
    }
    assert_eq!(w.introspections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_guard_what_they_must() {
    let w = World::start().await;
    let plain = reqwest::Client::new();
    let admin = |p: &str| format!("http://{}{p}", w.admin_addr);
    assert_eq!(plain.get(admin("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(plain.get(admin("/readyz")).send().await.unwrap().status(), 200);
    assert_eq!(plain.get(admin("/metrics")).send().await.unwrap().status(), 401);
    assert_eq!(plain.get(admin("/metrics")).bearer_auth("wrong-secret-0123456789").send().await.unwrap().status(), 401);
    let revoke = |secret: &str, body: &str| {
        plain
            .post(admin("/revocations"))
            .bearer_auth(secret)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    assert_eq!(revoke("wrong-secret-0123456789", r#"{"consent_id":"c"}"#).await.unwrap().status(), 401);
    assert_eq!(revoke(ADMIN_SECRET, r#"{"consent_id":"c","token":"t"}"#).await.unwrap().status(), 400);
    assert_eq!(revoke(ADMIN_SECRET, "not json").await.unwrap().status(), 400);

    // A token revoked by the admin endpoint is introspected afresh on its next use.
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let r = revoke(ADMIN_SECRET, &format!(r#"{{"token":"{token}"}}"#)).await.unwrap();
    assert_eq!(r.text().await.unwrap(), r#"{"evicted":1}"#);
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.introspections(), calls + 1);
}

fn edit(path: &std::path::Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from} not in {}", path.display());
    std::fs::write(path, text.replace(from, to)).unwrap();
}

fn append(path: &std::path::Path, text: &str) {
    let mut all = std::fs::read_to_string(path).unwrap();
    all.push_str(text);
    std::fs::write(path, all).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_drops_nothing_and_applies_the_new_rules() {
    let w = Arc::new(World::start().await);
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/balances", &token).await.status(), 200);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (w, token, stop, ok, failed) = (w.clone(), token.clone(), stop.clone(), ok.clone(), failed.clone());
        // Each its own client: its own connections.
        let c = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
        load.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            for _ in 0..5_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match c.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let policy = w.dir.path().join("policies/gobank.toml");
    append(
        &policy,
        "\n[[route]]\npath = \"/balances\"\nscopes = [\"accounts\"]\npermissions = [\"ReadDirectDebits\"]\n",
    );
    wait_for_metric(&w, "fapi_gateway_config_generation", 2.0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "requests failed during the reload");
    assert!(ok.load(Ordering::SeqCst) > 20, "too little load: {}", ok.load(Ordering::SeqCst));
    let (status, _, _, code) = refusal(w.get(&w.tpp, "/gobank/balances", &token).await).await;
    assert_eq!((status, code.as_str()), (403, "UK.OBIE.Resource.ConsentMismatch"));
    assert_eq!(w.metric(r#"fapi_gateway_config_reloads_total{result="ok"}"#).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_keeps_the_old_rules() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    edit(&w.dir.path().join("policies/gobank.toml"), "profile = \"obuk\"", "profile = \"obuk\"\nsurprise = true");
    wait_for_metric(&w, r#"fapi_gateway_config_reloads_total{result="error"}"#, 1.0).await;
    assert_eq!(w.metric("fapi_gateway_config_last_reload_success").await, 0.0);
    assert_eq!(w.metric("fapi_gateway_config_generation").await, 1.0);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    // SIGHUP-style explicit reload reports the same problem, with file and line.
    let e = w.gateway.reloader.reload().unwrap_err().to_string();
    assert!(e.contains("gobank.toml:12: unknown field `surprise`"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_and_client_ca_rotate_without_restart() {
    let w = World::start().await;
    let next = fapi_devkit::pki::DevPki::at(&w.dir.path().join("next"));
    next.generate().unwrap();
    let next_client = || client(&next.ca(), Some((&next.tpp_cert(), &next.tpp_key())), false);
    let old_client = || client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
    assert!(next_client().get(w.url("/gobank/accounts")).send().await.is_err());
    assert_eq!(old_client().get(w.url("/gobank/accounts")).send().await.unwrap().status(), 401);

    for (from, to) in
        [(next.server_cert(), w.pki.server_cert()), (next.server_key(), w.pki.server_key()), (next.ca(), w.pki.ca())]
    {
        std::fs::copy(from, to).unwrap();
    }
    wait_for_metric(&w, "fapi_gateway_config_generation", 2.0).await;
    // New handshakes see the new certificate and the new CA bundle.
    assert_eq!(next_client().get(w.url("/gobank/accounts")).send().await.unwrap().status(), 401);
    assert!(old_client().get(w.url("/gobank/accounts")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_can_demand_fresher_introspection_than_the_cache_keeps() {
    let w = World::start().await;
    let (_, token) = w.go_bank_token().await;
    append(
        &w.dir.path().join("policies/gobank.toml"),
        "\n[[route]]\npath = \"/balances\"\ncache_ttl_seconds = 0\nscopes = [\"accounts\"]\npermissions = [\"ReadBalances\"]\n",
    );
    w.gateway.reloader.reload().unwrap();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    let calls = w.introspections();
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
    assert_eq!(w.introspections(), calls, "a hit on the default route");
    assert_eq!(w.get(&w.tpp, "/gobank/balances", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/balances", &token).await.status(), 200);
    assert_eq!(w.introspections(), calls + 2, "every request on the fresh route introspects");
    assert_eq!(w.metric(r#"fapi_gateway_cache_evictions_total{cause="stale"}"#).await, 2.0);
}
