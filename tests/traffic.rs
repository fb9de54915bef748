//! Traffic control end to end: per-TPP rate limits and quotas declared in policy files,
//! and PSD2's unattended-access limit, through the real gateway over mutual TLS.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn with_policy(text: &str) -> Options {
    Options { policy_appends: vec![("gobank.toml".into(), text.into())], ..Options::default() }
}

/// Requests answered with `decision`, over every route.
async fn decisions(w: &World, decision: &str) -> f64 {
    let (_, text) = w.admin("/metrics").await;
    let label = format!("decision=\"{decision}\"");
    text.lines()
        .filter(|l| l.starts_with("fapi_gateway_requests_total{") && l.contains(&label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A token for a Go Bank consent of `client` (the TPP or the other TPP).
async fn token_of(w: &World, client: &reqwest::Client) -> (String, String) {
    let consent = w.consent(client, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
    (consent.clone(), w.token(client, Some(&consent), "openid accounts", None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_tpp_rate_gets_exactly_the_bucket_then_429s() {
    let w = World::start_with(with_policy(
        "\n[[rate_limit]]\nname = \"per-tpp\"\nkey = [\"client_id\"]\nrate = 5\nper = \"minute\"\nburst = 5\n",
    ))
    .await;
    let (_, token) = token_of(&w, &w.tpp).await;
    let (_, other_token) = token_of(&w, &w.other_tpp).await;

    // Sequentially: the first five pass with the remaining count going down.
    for remaining in (0..5).rev() {
        let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per-tpp\";q=5;w=60");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"per-tpp\";r={remaining};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=12).contains(&retry), "one token every 12 s: {retry}");
    assert_eq!(header(&r, "ratelimit-policy"), "\"per-tpp\";q=5;w=60");
    assert_eq!(header(&r, "ratelimit"), format!("\"per-tpp\";r=0;t={retry}"));
    assert!(uuid::Uuid::try_parse(&header(&r, "x-fapi-interaction-id")).is_ok());
    assert_eq!(header(&r, "www-authenticate"), "", "a limit is not an authentication problem");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Code"], "429 TooManyRequests");
    assert!(body["Message"].as_str().unwrap().contains("per-tpp"), "{body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.UnexpectedError");
    assert_eq!(w.fixtures.go_bank.requests(), 5, "nothing over the limit reached the bank");

    // The other TPP has a bucket of its own: a concurrent burst of 12 gets exactly 5 through.
    let burst = (0..12).map(|_| w.get(&w.other_tpp, "/gobank/accounts", &other_token));
    let statuses: Vec<u16> = futures::future::join_all(burst).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    assert_eq!(w.fixtures.go_bank.requests(), 10);
    assert_eq!(decisions(&w, "rate_limited").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_window_refuses_until_the_next_window_per_consent_and_route() {
    let w = World::start_with(with_policy(
        "\n[[quota]]\nname = \"per-consent\"\nkey = [\"consent\", \"route\"]\nlimit = 3\nper = \"second\"\n",
    ))
    .await;
    let (_, token) = token_of(&w, &w.tpp).await;
    let (_, second_token) = token_of(&w, &w.tpp).await;
    // Warm the introspection cache, so the counted requests are fast.
    w.get(&w.tpp, "/gobank/balances", &token).await;
    w.get(&w.tpp, "/gobank/balances", &second_token).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Start just after a window opens (windows are aligned to the epoch's seconds).
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1010 - ms)).await;
        let window = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(w.get(&w.tpp, "/gobank/accounts", &token).await.status().as_u16());
        }
        // The same consent on another route, and another consent: counted apart.
        let other_route = w.get(&w.tpp, "/gobank/transactions", &token).await;
        let other_consent = w.get(&w.tpp, "/gobank/accounts", &second_token).await;
        let last = w.get(&w.tpp, "/gobank/accounts", &token).await;
        let still_same_window = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() == window;
        if !still_same_window {
            assert!(attempts < 4, "the machine is too slow for one-second windows");
            continue;
        }
        assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
        assert_eq!(other_route.status(), 200);
        assert_eq!(other_consent.status(), 200);
        assert_eq!(last.status(), 429);
        assert_eq!(header(&last, "retry-after"), "1");
        assert_eq!(header(&last, "ratelimit"), "\"per-consent\";r=0;t=1");
        break;
    }
    // The next window admits three again.
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1010 - ms)).await;
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").starts_with("\"per-consent\";r=2;"), "{}", header(&r, "ratelimit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_account_access_is_four_per_day_per_consent_and_account() {
    let w = World::start_with(with_policy("\n[unattended_access]\n")).await;
    let consent = w.consent(&w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001", "GB-1002"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    let present = |path: &str| {
        w.tpp.get(w.url(path)).bearer_auth(&token).header("x-fapi-customer-ip-address", "203.0.113.7").send()
    };

    // With the customer present: never counted.
    for _ in 0..6 {
        let r = present("/gobank/accounts/GB-1001/balances").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit"), "", "customer-present calls are not counted");
    }
    // Without: four over any endpoint of the account, then refused.
    let paths =
        ["/gobank/accounts/GB-1001/balances", "/gobank/accounts/GB-1001", "/gobank/accounts/GB-1001/transactions"];
    for i in 0..4 {
        let r = w.get(&w.tpp, paths[i % 3], &token).await;
        assert_eq!(r.status(), 200, "unattended call {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"psd2-unattended\";q=4;w=86400");
        assert!(header(&r, "ratelimit").starts_with(&format!("\"psd2-unattended\";r={};", 3 - i)));
    }
    let bank_before = w.fixtures.go_bank.requests();
    for path in paths {
        let r = w.get(&w.tpp, path, &token).await;
        assert_eq!(r.status(), 429, "{path}");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((86_000..=86_400).contains(&retry), "{retry}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Missing");
        assert_eq!(body["Errors"][0]["Path"], "x-fapi-customer-ip-address");
    }
    // A malformed customer address does not lift the limit.
    let r =
        w.tpp.get(w.url(paths[0])).bearer_auth(&token).header("x-fapi-customer-ip-address", "me").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(w.fixtures.go_bank.requests(), bank_before, "refused calls never reach the bank");
    // The customer present again: served. Another account of the consent: its own four.
    assert_eq!(present(paths[0]).await.unwrap().status(), 200);
    for _ in 0..4 {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1002/balances", &token).await.status(), 200);
    }
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1002/balances", &token).await.status(), 429);
    assert_eq!(decisions(&w, "unattended_limit").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_limit_numbers_are_configurable_per_api() {
    let w = World::start_with(with_policy("\n[unattended_access]\nmax_requests = 2\nwindow_seconds = 3600\n")).await;
    let (_, token) = token_of(&w, &w.tpp).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    let r = w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "ratelimit-policy"), "\"psd2-unattended\";q=2;w=3600");
    // The Hyperscale Bank API (no [unattended_access]) is not limited.
    let consent = w.consent(&w.tpp, "hyperscalebank", &[], "alice", &["HS-1001"]).await;
    let hs = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    for _ in 0..5 {
        assert_eq!(w.get(&w.tpp, "/hyperscalebank/accounts/HS-1001", &hs).await.status(), 200);
    }
}

// ---- OpenTelemetry ----

mod otlp {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::routing::post;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    pub use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;

    /// An OTLP/HTTP receiver on loopback: keeps every export's bytes.
    #[derive(Clone, Default)]
    pub struct Receiver {
        pub exports: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl Receiver {
        pub async fn start() -> (Receiver, SocketAddr) {
            let receiver = Receiver::default();
            let app = axum::Router::new()
                .route(
                    "/v1/traces",
                    post(|State(r): State<Receiver>, body: Bytes| async move {
                        r.exports.lock().unwrap().push(body.to_vec());
                        ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
                    }),
                )
                .with_state(receiver.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            (receiver, addr)
        }

        /// Every span received so far.
        pub fn spans(&self) -> Vec<Span> {
            let exports = self.exports.lock().unwrap();
            exports
                .iter()
                .flat_map(|b| ExportTraceServiceRequest::decode(&b[..]).expect("a valid OTLP export").resource_spans)
                .flat_map(|r| r.scope_spans)
                .flat_map(|s| s.spans)
                .collect()
        }

        /// Waits (up to 10 s) until `enough` holds for the spans received.
        pub async fn wait_for(&self, enough: impl Fn(&[Span]) -> bool) -> Vec<Span> {
            for _ in 0..100 {
                let spans = self.spans();
                if enough(&spans) {
                    return spans;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("spans not received in 10 s: {:?}", self.spans().iter().map(|s| &s.name).collect::<Vec<_>>());
        }
    }

    /// A span attribute as text.
    pub fn attribute(span: &Span, key: &str) -> Option<String> {
        let value = span.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
        Some(match value {
            Value::StringValue(s) => s.clone(),
            Value::IntValue(i) => i.to_string(),
            Value::DoubleValue(d) => d.to_string(),
            Value::BoolValue(b) => b.to_string(),
            other => format!("{other:?}"),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tracing_options(collector: std::net::SocketAddr, ratio: f64) -> Options {
    Options {
        config_extra: format!(
            "[tracing]\nendpoint = \"http://{collector}/v1/traces\"\nsampling_ratio = {ratio:?}\nexport_interval_ms = 100\n"
        ),
        ..Options::default()
    }
}

const TPP_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const TPP_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_linked_and_the_trace_continues_at_the_bank() {
    let (collector, addr) = otlp::Receiver::start().await;
    let w = World::start_with(tracing_options(addr, 1.0)).await;
    let (consent, token) = token_of(&w, &w.tpp).await;

    let r = w
        .tpp
        .get(w.url("/gobank/accounts/GB-1001"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{TPP_TRACE}-{TPP_SPAN}-01"))
        .header("tracestate", "tpp=t61rcWkgMzE")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    let traceparent = seen["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts[0], parts[1], parts[3]), ("00", TPP_TRACE, "01"), "{traceparent}");
    assert_ne!(parts[2], TPP_SPAN, "the bank's parent is the gateway's span");
    assert_eq!(seen["tracestate"].to_str().unwrap(), "tpp=t61rcWkgMzE");

    // Again without a trace (a cache hit), and a refused one.
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", "not-a-token").await.status(), 401);

    let spans = collector
        .wait_for(|s| s.iter().filter(|s| s.name == "fapi-gateway request").count() >= 3 && s.len() >= 6)
        .await;
    let of_trace: Vec<&otlp::Span> = spans.iter().filter(|s| hex(&s.trace_id) == TPP_TRACE).collect();
    let by_name = |n: &str| *of_trace.iter().find(|s| s.name == n).unwrap_or_else(|| panic!("no {n} span"));
    let (request, introspection, upstream) =
        (by_name("fapi-gateway request"), by_name("introspection"), by_name("upstream"));
    assert_eq!(of_trace.len(), 3);
    assert_eq!(hex(&request.parent_span_id), TPP_SPAN, "the request continues the TPP's span");
    assert_eq!(introspection.parent_span_id, request.span_id);
    assert_eq!(upstream.parent_span_id, request.span_id);
    assert_eq!(hex(&upstream.span_id), parts[2], "the bank saw the upstream span as its parent");
    let attr = |s: &otlp::Span, k: &str| otlp::attribute(s, k).unwrap_or_else(|| panic!("no {k} on {}", s.name));
    assert_eq!(attr(request, "http.route"), "/accounts/{AccountId}");
    assert_eq!(attr(request, "fapi.decision"), "allowed");
    assert_eq!(attr(request, "fapi.client_id"), "financroo");
    assert_eq!(attr(request, "fapi.consent_id_hash"), fapi_gateway_server::telemetry::consent_hash(&consent));
    assert_eq!(attr(request, "fapi.cache"), "miss");
    assert_eq!(attr(request, "http.response.status_code"), "200");
    assert!(!attr(introspection, "fapi.authorization_server").is_empty());
    assert!(attr(introspection, "fapi.introspection.duration_ms").parse::<f64>().unwrap() > 0.0);
    assert!(introspection.end_time_unix_nano >= introspection.start_time_unix_nano);
    assert!(request.start_time_unix_nano <= introspection.start_time_unix_nano);
    assert!(request.end_time_unix_nano >= upstream.end_time_unix_nano);
    assert_eq!(attr(upstream, "http.response.status_code"), "200");

    // The hit: a trace of its own, no introspection span. The refusal: its reason.
    let others: Vec<&otlp::Span> =
        spans.iter().filter(|s| s.name == "fapi-gateway request" && hex(&s.trace_id) != TPP_TRACE).collect();
    let hit = others.iter().find(|s| otlp::attribute(s, "fapi.cache").as_deref() == Some("hit")).unwrap();
    assert!(hit.parent_span_id.is_empty());
    assert!(!spans.iter().any(|s| s.trace_id == hit.trace_id && s.name == "introspection"));
    assert!(others.iter().any(|s| otlp::attribute(s, "fapi.decision").as_deref() == Some("invalid_token")
        && otlp::attribute(s, "http.response.status_code").as_deref() == Some("401")));

    // No token, no consent id, in anything exported.
    for export in collector.exports.lock().unwrap().iter() {
        for secret in [token.as_bytes(), consent.as_bytes(), b"not-a-token"] {
            assert!(!export.windows(secret.len()).any(|w| w == secret), "a secret in an export");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_requests_export_nothing_but_still_carry_the_trace_to_the_bank() {
    let (collector, addr) = otlp::Receiver::start().await;
    let w = World::start_with(tracing_options(addr, 0.0)).await;
    let (_, token) = token_of(&w, &w.tpp).await;
    for _ in 0..3 {
        let r = w
            .tpp
            .get(w.url("/gobank/accounts"))
            .bearer_auth(&token)
            .header("traceparent", format!("00-{TPP_TRACE}-{TPP_SPAN}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let seen = w.fixtures.go_bank.last_headers().unwrap();
        let traceparent = seen["traceparent"].to_str().unwrap().to_string();
        assert!(traceparent.starts_with(&format!("00-{TPP_TRACE}-")), "{traceparent}");
        assert!(traceparent.ends_with("-00"), "not sampled here: {traceparent}");
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(collector.spans().is_empty(), "sampling ratio 0 records nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tracing_the_tpps_traceparent_passes_unchanged() {
    let w = World::start().await;
    let (_, token) = token_of(&w, &w.tpp).await;
    let traceparent = format!("00-{TPP_TRACE}-{TPP_SPAN}-01");
    let r = w.tpp.get(w.url("/gobank/accounts")).bearer_auth(&token).header("traceparent", &traceparent).send().await;
    assert_eq!(r.unwrap().status(), 200);
    assert_eq!(w.fixtures.go_bank.last_headers().unwrap()["traceparent"].to_str().unwrap(), traceparent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_compares_limits_and_tracing_with_the_plain_hot_path() {
    use fapi_devkit::bench::{BenchOptions, Scenario};
    fapi_enforcement::install_crypto_provider();
    let options = BenchOptions {
        concurrency: 2,
        duration: Duration::from_millis(1000),
        max_requests: 200,
        hot_tokens: 5,
        cold_tokens: 10,
        scenarios: vec![Scenario::RateLimited, Scenario::Traced100],
        memory: vec![],
        binary: env!("CARGO_BIN_EXE_fapi-gateway").into(),
        rounds: 1,
        reqwest: true,
        // oha is the benchmark's (benches/run.sh installs it), not the tests'.
        oha: false,
    };
    let report = fapi_devkit::bench::run(options).await.unwrap();
    let table = report.table();
    assert_eq!(report.scenarios.len(), 2, "{table}");
    for m in &report.scenarios {
        assert!(m.requests > 0 && m.errors == 0 && m.refused == 0, "{table}");
    }
    assert_eq!(report.ratios.len(), 2, "{table}");
    assert!(report.ratios.iter().all(|(_, r)| *r > 0.0), "{table}");
    assert!(report.notes.iter().any(|n| n.contains("bytes of spans received") && !n.contains(", 0 bytes")), "{table}");
}
