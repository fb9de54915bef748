//! The cost of traffic control and tracing on the hot path: the gateway with one rate
//! limit per TPP, and with OpenTelemetry at 1 % and 100 % sampling (exporting to an OTLP
//! sink on loopback), each against the plain hot-path gateway in alternating rounds; the
//! ratio reported is the median of the rounds' ratios, with CPU per request of both.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::bench::{drive, gateway_config, pick_port, spawn, Measured, Process, Scenario, Target};
use crate::demo::Fixtures;

/// Rounds of (plain, variant) per comparison.
pub const ROUNDS: usize = 5;

/// What a variant gateway adds to the plain one.
pub fn variant_of(scenario: Scenario) -> Option<&'static str> {
    match scenario {
        Scenario::RateLimited => Some("rate limits on (one token-bucket rule per TPP, never exceeded)"),
        Scenario::RateLimitedFleet => {
            Some("fleet-wide rate limits on (the same rule, counted in Redis with leases of 10)")
        }
        Scenario::Traced1 => Some("tracing on, 1 % sampled"),
        Scenario::Traced100 => Some("tracing on, 100 % sampled"),
        _ => None,
    }
}

/// The plain hot-path gateway the variants are compared with.
pub(crate) struct Baseline<'a> {
    pub(crate) url: String,
    pub(crate) process: &'a Process,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis; utime and stime are the 12th and 13th.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let hz = 100.0; // USER_HZ on Linux
    (ticks(11) + ticks(12)) / hz
}

/// An OTLP/HTTP sink that answers every export and counts its bytes.
async fn otlp_sink() -> Result<(SocketAddr, Arc<AtomicU64>), String> {
    use axum::routing::post;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(body.len() as u64, Ordering::Relaxed);
                ([("content-type", "application/x-protobuf")], Vec::<u8>::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, received))
}

/// A `redis-server` from PATH on a free loopback port, without persistence.
async fn redis_server(dir: &Path) -> Result<(Process, String), String> {
    let binary = std::env::var_os("PATH")
        .and_then(|p| p.to_str().map(|p| p.split(':').map(|d| Path::new(d).join("redis-server")).find(|f| f.is_file())))
        .flatten()
        .ok_or("needs redis-server on PATH (apt-get install redis-server)")?;
    let port = pick_port().port();
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let args = ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    let process = spawn(&binary, &args, &dir.join("redis.log"))?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().map_err(|e| format!("{e}"))?;
    fapi_gateway_server::server::wait_for_listener(addr).await?;
    Ok((process, format!("redis://{addr}")))
}

/// The figures of one comparison.
pub struct Comparison {
    pub measured: Measured,
    pub ratio: f64,
    pub cpu_per_request_us: (f64, f64),
    pub note: String,
}

/// Starts the variant gateway, then alternates rounds of the plain and the variant
/// gateway under the same load; `tokens` are warm in the plain one (and warmed here in
/// the variant).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn compare(
    scenario: Scenario,
    dir: &Path,
    binary: &Path,
    fixtures: &Fixtures,
    bank: SocketAddr,
    baseline: &Baseline<'_>,
    clients: &[reqwest::Client],
    tokens: Arc<Vec<(String, String)>>,
    duration: Duration,
    max: u64,
) -> Result<Comparison, String> {
    let variant_dir = dir.join(scenario.name());
    let (config, addr) = gateway_config(&variant_dir, fixtures, bank, false, pick_port(), false)?;
    let mut sink = None;
    let mut _redis = None;
    match scenario {
        Scenario::RateLimited | Scenario::RateLimitedFleet => {
            // One rule per TPP, high enough never to refuse: the cost of counting.
            let policy = variant_dir.join("policies").join("gobank.toml");
            let mut text = std::fs::read_to_string(&policy).map_err(|e| e.to_string())?;
            text.push_str(
                "\n[[rate_limit]]\nname = \"financroo\"\nkey = [\"client_id\"]\nclient_ids = [\"financroo\"]\nrate = 1000000\nper = \"second\"\n",
            );
            std::fs::write(&policy, text).map_err(|e| e.to_string())?;
            if scenario == Scenario::RateLimitedFleet {
                let (process, url) = redis_server(&variant_dir).await?;
                _redis = Some(process);
                let mut text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
                text.push_str(&format!("\n[cluster]\nredis_url = \"{url}\"\n"));
                std::fs::write(&config, text).map_err(|e| e.to_string())?;
            }
        }
        Scenario::Traced1 | Scenario::Traced100 => {
            let (sink_addr, received) = otlp_sink().await?;
            let ratio = if scenario == Scenario::Traced1 { "0.01" } else { "1.0" };
            let mut text = std::fs::read_to_string(&config).map_err(|e| e.to_string())?;
            text.push_str(&format!(
                "[tracing]\nendpoint = \"http://{sink_addr}/v1/traces\"\nsampling_ratio = {ratio}\n"
            ));
            std::fs::write(&config, text).map_err(|e| e.to_string())?;
            sink = Some(received);
        }
        _ => return Err(format!("{} is not a variant", scenario.name())),
    }
    fapi_enforcement::config::GatewayConfig::load(&config).map_err(|e| e.to_string())?;
    let log = variant_dir.join("gateway.log");
    let process = spawn(binary, &["run", "--config", &config.display().to_string()], &log)?;
    fapi_gateway_server::server::wait_for_listener(addr).await?;
    let url = format!("https://{addr}/gobank/accounts");
    for (_, t) in tokens.iter() {
        let _ = clients[0].get(&url).bearer_auth(t).send().await;
    }
    let target = |url: String| -> Target {
        let tokens = tokens.clone();
        Arc::new(move |c: &reqwest::Client, i| Some(c.get(&url).bearer_auth(&tokens[(i as usize) % tokens.len()].1)))
    };
    let round = duration / ROUNDS as u32;
    let (mut ratios, mut cpu_plain, mut cpu_variant, mut requests) = (Vec::new(), 0.0, 0.0, (0u64, 0u64));
    let mut rounds: Vec<Measured> = Vec::new();
    for _ in 0..ROUNDS {
        let c0 = cpu_seconds(baseline.process.pid());
        let plain = drive(clients, round, max, target(baseline.url.clone())).await;
        cpu_plain += cpu_seconds(baseline.process.pid()) - c0;
        let c0 = cpu_seconds(process.pid());
        let variant = drive(clients, round, max, target(url.clone())).await;
        cpu_variant += cpu_seconds(process.pid()) - c0;
        requests = (requests.0 + plain.requests, requests.1 + variant.requests);
        ratios.push(variant.rps / plain.rps.max(1e-9));
        rounds.push(variant);
    }
    let mut sorted = ratios.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let median = sorted[sorted.len() / 2];
    let at = ratios.iter().position(|r| *r == median).unwrap_or(0);
    let mut measured = rounds.swap_remove(at);
    measured.scenario = scenario.name();
    measured.generator = "reqwest";
    measured.refused += rounds.iter().map(|m| m.refused).sum::<u64>();
    measured.errors += rounds.iter().map(|m| m.errors).sum::<u64>();
    let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
    let cpu_per_request_us = (per(cpu_plain, requests.0), per(cpu_variant, requests.1));
    let mut note = format!(
        "{}: rounds {:?}, CPU per request {:.0} µs plain vs {:.0} µs",
        scenario.name(),
        ratios.iter().map(|r| (r * 1000.0).round() / 1000.0).collect::<Vec<_>>(),
        cpu_per_request_us.0,
        cpu_per_request_us.1
    );
    if let Some(received) = sink {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        note.push_str(&format!(", {} bytes of spans received", received.load(Ordering::Relaxed)));
    }
    drop(process);
    Ok(Comparison { measured, ratio: median, cpu_per_request_us, note })
}
