//! The benchmark's second load generator: oha (crates.io, `cargo install oha --locked`;
//! `benches/run.sh` installs it), run with the TPP's client certificate over the same
//! number of HTTP/1.1 keep-alive connections. A generator of its own process and code
//! checks that the figures are not the in-process reqwest generator's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::pki::DevPki;

/// The oha binary: `$OHA`, on `PATH`, or in `~/.cargo/bin`.
pub fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("OHA").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin"));
    std::env::split_paths(&path).chain(home).map(|d| d.join("oha")).find(|p| p.is_file())
}

/// What oha measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct OhaRun {
    /// Responses received (any status) and connection errors.
    pub requests: u64,
    /// Responses with a status other than 200.
    pub not_ok: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// Runs `oha -c concurrency -z duration` against `url` with the TPP's certificate; `token`
/// as the bearer token, `headers` as more request headers.
pub async fn run(
    oha: &Path,
    pki: &DevPki,
    url: &str,
    token: Option<&str>,
    headers: &[(&str, String)],
    concurrency: usize,
    duration: Duration,
) -> Result<OhaRun, String> {
    let mut command = tokio::process::Command::new(oha);
    command
        .args(["--no-tui", "--output-format", "json", "--http-version", "1.1", "-c"])
        .arg(concurrency.to_string())
        .arg("-z")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("--cacert")
        .arg(pki.ca())
        .arg("--cert")
        .arg(pki.tpp_cert())
        .arg("--key")
        .arg(pki.tpp_key());
    if let Some(t) = token {
        command.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    for (k, v) in headers {
        command.arg("-H").arg(format!("{k}: {v}"));
    }
    command.arg(url).stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = command.output().await.map_err(|e| format!("cannot run {}: {e}", oha.display()))?;
    if !out.status.success() {
        return Err(format!("oha failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let report: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("oha's JSON: {e}"))?;
    parse(&report)
}

fn parse(report: &Value) -> Result<OhaRun, String> {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let count = |v: &Value| v.as_object().map(|o| o.values().filter_map(Value::as_u64).sum::<u64>()).unwrap_or(0);
    let statuses = &report["statusCodeDistribution"];
    let answered = count(statuses);
    let ok = statuses.get("200").and_then(Value::as_u64).unwrap_or(0);
    // "aborted due to deadline" is how every run ends on HTTP/1: not an error of the proxy.
    let errors = report["errorDistribution"]
        .as_object()
        .map(|o| o.iter().filter(|(k, _)| !k.contains("deadline")).filter_map(|(_, v)| v.as_u64()).sum())
        .unwrap_or(0);
    let p = &report["latencyPercentiles"];
    let seconds = f(&report["summary"]["total"]);
    if seconds <= 0.0 {
        return Err("oha reported no run".into());
    }
    Ok(OhaRun {
        requests: answered + errors,
        not_ok: answered - ok,
        errors,
        seconds,
        rps: answered as f64 / seconds,
        p50_ms: f(&p["p50"]) * 1000.0,
        p90_ms: f(&p["p90"]) * 1000.0,
        p99_ms: f(&p["p99"]) * 1000.0,
        p999_ms: f(&p["p99.9"]) * 1000.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ohas_json_report() {
        let report = serde_json::json!({
            "summary": {"total": 2.0, "successRate": 1.0},
            "latencyPercentiles": {"p50": 0.001, "p90": 0.002, "p99": 0.004, "p99.9": 0.008},
            "statusCodeDistribution": {"200": 1900, "403": 100},
            "errorDistribution": {"aborted due to deadline": 16, "connection closed": 2}
        });
        let r = parse(&report).unwrap();
        assert_eq!((r.requests, r.not_ok, r.errors), (2002, 100, 2));
        assert_eq!(r.rps, 1000.0);
        assert_eq!((r.p50_ms, r.p99_ms, r.p999_ms), (1.0, 4.0, 8.0));
    }
}
