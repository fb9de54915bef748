//! A smoke run of the load benchmark (seconds, small counts) so it never rots. Timings
//! are not asserted: the machines are shared and noisy; RESULTS.md holds real runs.

use std::time::Duration;

use fapi_devkit::bench::{BenchOptions, Scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_benchmark_runs_every_gateway_scenario() {
    fapi_enforcement::install_crypto_provider();
    let options = BenchOptions {
        concurrency: 2,
        duration: Duration::from_millis(700),
        max_requests: 300,
        hot_tokens: 10,
        cold_tokens: 50,
        scenarios: vec![
            Scenario::BankDirect,
            Scenario::NginxPlain,
            Scenario::BareProxy,
            Scenario::GatewayNoAuth,
            Scenario::GatewayHot,
            Scenario::GatewayCold,
            Scenario::RevocationStorm,
            Scenario::AuthorizationServer,
        ],
        memory: vec![2_000],
        binary: env!("CARGO_BIN_EXE_fapi-gateway").into(),
        rounds: 2,
        reqwest: true,
        // oha is the benchmark's (benches/run.sh installs it), not the tests'.
        oha: false,
    };
    let report = fapi_devkit::bench::run(options).await.unwrap();
    let table = report.table();
    // Every scenario in both rounds, alternating; nginx (installed by .ci/run) included.
    assert_eq!(report.scenarios.len(), 16, "{table}");
    assert_eq!(report.scenarios[0].scenario, "bank-direct");
    assert_eq!(report.scenarios[8].scenario, "bank-direct");
    assert_eq!(report.scenarios[8].round, 1);
    assert_eq!(report.medians.len(), 8, "{table}");
    // The proxies' CPU time is read from /proc: the floors and the gateways spent some.
    let cpu: f64 = report
        .scenarios
        .iter()
        .filter(|m| matches!(m.scenario, "pingora-bare" | "nginx-plain" | "gateway-no-auth" | "gateway-hot"))
        .map(|m| m.cpu.0 + m.cpu.1)
        .sum();
    assert!(cpu > 0.0, "{table}");
    assert!(report.ratios.iter().any(|(n, _)| n.contains("authorization off / bare pingora")), "{table}");
    for m in &report.scenarios {
        assert!(m.requests > 0, "{table}");
        assert_eq!(m.errors, 0, "{table}");
    }
    let by = |name: &str| report.scenarios.iter().find(|m| m.scenario == name).unwrap();
    assert_eq!(by("as-introspection").ok, by("as-introspection").requests, "{table}");
    assert_eq!(by("gateway-hot").introspection_calls, Some(0), "warm tokens are all hits: {table}");
    assert_eq!(by("gateway-hot").cache_hit_ratio, Some(1.0), "{table}");
    let cold = by("gateway-cold");
    assert_eq!(cold.introspection_calls, cold.distinct_tokens, "one call per distinct token: {table}");
    assert_eq!(cold.refused, 0);
    assert!(report.memory[0].1 > 0.0, "{table}");
    assert_eq!(report.json()["runs"].as_array().unwrap().len(), 16);
}
