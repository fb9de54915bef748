//! Prometheus metrics. One [`Metrics`] per gateway (not process-global, so several
//! gateways in one test process keep separate counts); the admin listener renders it.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the gateway exports. Names follow Prometheus conventions: `_total` for
/// counters, base units (`_seconds`) for durations.
pub struct Metrics {
    registry: Registry,
    /// Requests by API, route template, method, status and decision (`allowed` or a refusal reason).
    pub requests: IntCounterVec,
    /// The whole request, from the first byte read to the last written.
    pub request_duration: HistogramVec,
    /// Time spent deciding (credentials, route, cache or introspection, policy).
    pub decision_duration: Histogram,
    /// Introspection calls to the authorization server, by outcome (`ok` or an error kind).
    pub introspection_duration: HistogramVec,
    /// Failed introspection calls, by server and error kind.
    pub introspection_errors: IntCounterVec,
    /// Time to the upstream's response header.
    pub upstream_duration: HistogramVec,
    /// Failed connects to an upstream target (the target is ejected), by upstream and
    /// whether the request was tried again on another target (`retried`: `true`/`false`).
    pub upstream_connect_failures: IntCounterVec,
    /// Cache lookups: `hit`, `miss` (made the call), `coalesced` (waited for another's call).
    pub cache_lookups: IntCounterVec,
    /// Cache removals by cause: `expired`, `size`, `revoked`, `stale` (older than a route allows).
    pub cache_evictions: IntCounterVec,
    /// Introspection results cached for every server, as of the last scrape.
    pub cache_entries: IntGauge,
    /// 0 closed, 1 open, 2 half-open.
    pub circuit_state: IntGaugeVec,
    /// Revocations received by the admin listener, by kind: `consent`, `token` or `subject`.
    pub revocations: IntCounterVec,
    /// Security Event Tokens pushed to the signal receiver, by result: `accepted`, an RFC
    /// 8935 error code, or `unavailable` (the transmitter's keys could not be fetched).
    pub signals: IntCounterVec,
    /// The configuration generation in force: 1 at start, one more per applied reload.
    pub config_generation: IntGauge,
    /// Configuration reloads by result: `ok` or `error`.
    pub config_reloads: IntCounterVec,
    /// 1 if the last reload was applied, 0 if it was refused.
    pub config_last_reload_success: IntGauge,
    /// Downstream connections open (from accept, TLS handshakes included, to close).
    pub connections_open: IntGauge,
    /// The cap on open downstream connections in force.
    pub connections_max: IntGauge,
    /// Connections closed at accept, before TLS: `max_connections`, `per_ip`.
    pub connections_refused: IntCounterVec,
    /// Connections closed at a deadline: `handshake`, `request_head`, `idle`.
    pub connection_timeouts: IntCounterVec,
    /// TLS handshakes that failed (no or a refused client certificate, protocol errors).
    pub tls_handshake_failures: IntCounter,
    /// Per-connection failures pingora reports itself (an HTTP/2 client without a valid
    /// preface, a TLS close that fails), by `kind`: counted here, logged at debug only.
    pub connection_errors: IntCounterVec,
}

fn seconds_buckets() -> Vec<f64> {
    // 50 µs to ~26 s.
    exponential_buckets(0.00005, 2.0, 20).expect("valid buckets")
}

impl Metrics {
    /// Every metric at zero, in a registry of its own.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(seconds_buckets()), labels)
                .expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let decision_duration = Histogram::with_opts(
            HistogramOpts::new("fapi_gateway_decision_duration_seconds", "Time spent deciding a request")
                .buckets(seconds_buckets()),
        )
        .expect("valid metric");
        registry.register(Box::new(decision_duration.clone())).expect("unique metric");
        let circuit_state = IntGaugeVec::new(
            Opts::new(
                "fapi_gateway_circuit_state",
                "Circuit breaker to the authorization server: 0 closed, 1 open, 2 half-open",
            ),
            &["server"],
        )
        .expect("valid metric");
        registry.register(Box::new(circuit_state.clone())).expect("unique metric");
        let tls_handshake_failures =
            IntCounter::new("fapi_gateway_tls_handshake_failures_total", "Failed downstream TLS handshakes")
                .expect("valid metric");
        registry.register(Box::new(tls_handshake_failures.clone())).expect("unique metric");
        Metrics {
            requests: counter(
                "fapi_gateway_requests_total",
                "Requests by API, route, method, status and decision",
                &["api", "route", "method", "status", "decision"],
            ),
            request_duration: histogram("fapi_gateway_request_duration_seconds", "Whole request duration", &["api"]),
            decision_duration,
            introspection_duration: histogram(
                "fapi_gateway_introspection_duration_seconds",
                "Introspection calls by outcome",
                &["server", "outcome"],
            ),
            introspection_errors: counter(
                "fapi_gateway_introspection_errors_total",
                "Failed introspection calls by kind",
                &["server", "kind"],
            ),
            upstream_duration: histogram(
                "fapi_gateway_upstream_duration_seconds",
                "Time to the upstream's response header",
                &["api"],
            ),
            upstream_connect_failures: counter(
                "fapi_gateway_upstream_connect_failures_total",
                "Failed connects to upstream targets, by upstream and whether retried on another target",
                &["upstream", "retried"],
            ),
            cache_lookups: counter(
                "fapi_gateway_cache_lookups_total",
                "Introspection cache lookups by result",
                &["result"],
            ),
            cache_evictions: counter(
                "fapi_gateway_cache_evictions_total",
                "Introspection cache removals by cause",
                &["cause"],
            ),
            cache_entries: gauge("fapi_gateway_cache_entries", "Introspection results held"),
            circuit_state,
            revocations: counter("fapi_gateway_revocations_total", "Revocations received by kind", &["kind"]),
            signals: counter("fapi_gateway_signals_total", "Security Event Tokens received, by result", &["result"]),
            config_generation: gauge(
                "fapi_gateway_config_generation",
                "Configuration generation (1 at start, +1 per applied reload)",
            ),
            config_reloads: counter(
                "fapi_gateway_config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            ),
            config_last_reload_success: gauge(
                "fapi_gateway_config_last_reload_success",
                "1 if the last reload was applied, 0 if it was refused",
            ),
            connections_open: gauge("fapi_gateway_connections_open", "Downstream connections open"),
            connections_max: gauge("fapi_gateway_connections_max", "Cap on open downstream connections"),
            connections_refused: counter(
                "fapi_gateway_connections_refused_total",
                "Downstream connections closed at accept, by reason",
                &["reason"],
            ),
            connection_timeouts: counter(
                "fapi_gateway_connection_timeouts_total",
                "Downstream connections closed at a deadline, by phase",
                &["phase"],
            ),
            tls_handshake_failures,
            connection_errors: counter(
                "fapi_gateway_connection_errors_total",
                "Per-connection failures reported by pingora (logged at debug), by kind",
                &["kind"],
            ),
            registry,
        }
    }

    /// Adds a host's own metrics (the gateway's fleet metrics) to this registry, so one
    /// scrape shows them all. Fails on a name already registered.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
