//! `[tracing]`: OpenTelemetry traces exported over OTLP (HTTP/protobuf) to a collector.
//! Off unless the section is there.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::Diagnostics;

/// `[tracing]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TracingSection {
    #[serde(default = "yes")]
    enabled: bool,
    /// The collector's OTLP/HTTP traces URL (`http://collector:4318/v1/traces`).
    endpoint: Spanned<String>,
    #[serde(default = "default_ratio")]
    sampling_ratio: Spanned<f64>,
    #[serde(default = "default_service_name")]
    service_name: Spanned<String>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: Spanned<u64>,
    #[serde(default = "default_export_interval_ms")]
    export_interval_ms: Spanned<u64>,
    /// CA bundle for an `https` collector.
    ca: Option<Spanned<String>>,
}

fn yes() -> bool {
    true
}
fn default_ratio() -> Spanned<f64> {
    Spanned::new(0..0, 0.1)
}
fn default_service_name() -> Spanned<String> {
    Spanned::new(0..0, "fapi-gateway".into())
}
fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 5000)
}
fn default_export_interval_ms() -> Spanned<u64> {
    Spanned::new(0..0, 1000)
}

/// The validated `[tracing]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans go: an OTLP/HTTP traces URL.
    pub endpoint: String,
    /// The fraction of traces recorded (by trace id, so every service samples a trace
    /// alike); 0 records none but still propagates `traceparent`.
    pub sampling_ratio: f64,
    /// `service.name` of the spans.
    pub service_name: String,
    /// An export may take this long.
    pub timeout: Duration,
    /// Spans are sent in batches at least this often.
    pub export_interval: Duration,
    /// The CA bundle that signs an `https` collector's certificate.
    pub ca: Option<PathBuf>,
}

pub(super) fn validate(section: Option<&TracingSection>, d: &mut Diagnostics) -> Option<TracingConfig> {
    let s = section?;
    let endpoint = s.endpoint.get_ref();
    let https = endpoint.starts_with("https://");
    match http::Uri::try_from(endpoint.as_str()) {
        Ok(uri) if (uri.scheme_str() == Some("http") || https) && uri.host().is_some() => {}
        _ => d.error(
            Some(s.endpoint.span()),
            format!("tracing.endpoint `{endpoint}` must be an http:// or https:// URL (OTLP/HTTP, e.g. http://collector:4318/v1/traces)"),
        ),
    }
    let ratio = *s.sampling_ratio.get_ref();
    if !(0.0..=1.0).contains(&ratio) {
        d.error(Some(s.sampling_ratio.span()), format!("tracing.sampling_ratio {ratio} must be between 0 and 1"));
    }
    if s.service_name.get_ref().trim().is_empty() {
        d.error(Some(s.service_name.span()), "tracing.service_name is empty");
    }
    if !(1..=60_000).contains(s.timeout_ms.get_ref()) {
        d.error(Some(s.timeout_ms.span()), "tracing.timeout_ms must be between 1 and 60000");
    }
    if !(10..=60_000).contains(s.export_interval_ms.get_ref()) {
        d.error(Some(s.export_interval_ms.span()), "tracing.export_interval_ms must be between 10 and 60000");
    }
    let ca = s.ca.as_ref().map(|c| {
        let path = d.base.join(c.get_ref());
        if !path.is_file() {
            d.error(Some(c.span()), format!("tracing.ca `{}` is not a readable file", path.display()));
        }
        path
    });
    if https && ca.is_none() {
        d.error(Some(s.endpoint.span()), "an https tracing.endpoint needs tracing.ca (the CA bundle of the collector)");
    }
    s.enabled.then(|| TracingConfig {
        endpoint: endpoint.clone(),
        sampling_ratio: ratio,
        service_name: s.service_name.get_ref().clone(),
        timeout: Duration::from_millis(*s.timeout_ms.get_ref()),
        export_interval: Duration::from_millis(*s.export_interval_ms.get_ref()),
        ca,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::GatewayConfig;

    fn errors(tracing: &str) -> Vec<String> {
        let source = format!(
            "[listener]\naddress = \"127.0.0.1:8443\"\nclient_ca = \"ca.pem\"\n[upstreams]\ngobank = \"http://127.0.0.1:1\"\n{tracing}"
        );
        match GatewayConfig::parse(Path::new("/nonexistent/gateway.toml"), &source) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn tracing_mistakes_are_reported_with_file_and_line() {
        let cases = [
            ("[tracing]\nendpoint = \"collector:4318\"\n", "gateway.toml:7: tracing.endpoint `collector:4318` must be"),
            (
                "[tracing]\nendpoint = \"http://c:4318/v1/traces\"\nsampling_ratio = 1.5\n",
                "gateway.toml:8: tracing.sampling_ratio 1.5",
            ),
            (
                "[tracing]\nendpoint = \"https://c:4318/v1/traces\"\n",
                "gateway.toml:7: an https tracing.endpoint needs tracing.ca",
            ),
            ("[tracing]\nendpoint = \"http://c/v1/traces\"\ntimeout_ms = 0\n", "gateway.toml:8: tracing.timeout_ms"),
            ("[tracing]\nendpoint = \"http://c/v1/traces\"\ncolour = 1\n", "unknown field `colour`"),
        ];
        for (text, expected) in cases {
            let found = errors(text);
            assert!(found.iter().any(|e| e.contains(expected)), "expected {expected:?} in {found:?}");
        }
        assert!(!errors("[tracing]\nendpoint = \"http://c:4318/v1/traces\"\n").iter().any(|e| e.contains("tracing")));
    }
}
