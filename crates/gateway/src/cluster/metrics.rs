//! The fleet's metrics, in the gateway's registry.

use fapi_enforcement::metrics::Metrics;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::error::GatewayError;

/// What the fleet's feed and shared cache count.
pub struct ClusterMetrics {
    /// 1 while the revocation feed cannot be read (cached results then live at most
    /// `cluster.degraded_max_ttl_seconds`), 0 otherwise.
    pub degraded: IntGauge,
    /// Revocations appended to the feed by this replica: `ok`, `error` (a failed attempt,
    /// retried), `dropped` (queue full).
    pub published: IntCounterVec,
    /// Revocations from other replicas applied here, by kind.
    pub received: IntCounterVec,
    /// Whole-cache flushes because the feed lost entries this replica had not read.
    pub flushes: IntCounter,
    /// Shared-cache lookups: `hit`, `miss`, `rejected` (did not open, expired, another
    /// server's, or older than a revocation), `error` (Redis slow or down).
    pub shared_cache: IntCounterVec,
    /// Calls to the fleet-wide limit counters: `ok`, `error`, `timeout` (longer than
    /// `redis_timeout_ms`), `unavailable` (no connection).
    pub limits: IntCounterVec,
    /// Requests whose limits were counted locally (limits ÷ `replicas_hint`) because
    /// Redis did not answer.
    pub limits_fallback: IntCounter,
}

impl ClusterMetrics {
    /// Every metric at zero.
    pub fn new() -> ClusterMetrics {
        ClusterMetrics {
            degraded: IntGauge::new(
                "fapi_gateway_cluster_feed_degraded",
                "1 while the fleet's revocation feed cannot be read (cached results capped)",
            )
            .expect("valid metric"),
            published: IntCounterVec::new(
                Opts::new("fapi_gateway_cluster_revocations_published_total", "Revocations appended to the feed"),
                &["result"],
            )
            .expect("valid metric"),
            received: IntCounterVec::new(
                Opts::new(
                    "fapi_gateway_cluster_revocations_received_total",
                    "Revocations from other replicas applied here",
                ),
                &["kind"],
            )
            .expect("valid metric"),
            flushes: IntCounter::new(
                "fapi_gateway_cluster_cache_flushes_total",
                "Whole-cache flushes after a gap in the revocation feed",
            )
            .expect("valid metric"),
            shared_cache: IntCounterVec::new(
                Opts::new("fapi_gateway_cluster_shared_cache_total", "Shared introspection cache lookups by result"),
                &["result"],
            )
            .expect("valid metric"),
            limits: IntCounterVec::new(
                Opts::new("fapi_gateway_cluster_limit_calls_total", "Calls to the fleet-wide limit counters by result"),
                &["result"],
            )
            .expect("valid metric"),
            limits_fallback: IntCounter::new(
                "fapi_gateway_cluster_limits_fallback_total",
                "Requests whose limits were counted locally (limit / replicas_hint) because Redis did not answer",
            )
            .expect("valid metric"),
        }
    }

    pub(crate) fn register(&self, metrics: &Metrics) -> Result<(), GatewayError> {
        let fail = |e: prometheus::Error| GatewayError::Cluster(format!("metrics: {e}"));
        metrics.register(Box::new(self.degraded.clone())).map_err(fail)?;
        metrics.register(Box::new(self.published.clone())).map_err(fail)?;
        metrics.register(Box::new(self.received.clone())).map_err(fail)?;
        metrics.register(Box::new(self.flushes.clone())).map_err(fail)?;
        metrics.register(Box::new(self.shared_cache.clone())).map_err(fail)?;
        metrics.register(Box::new(self.limits.clone())).map_err(fail)?;
        metrics.register(Box::new(self.limits_fallback.clone())).map_err(fail)?;
        Ok(())
    }
}

impl Default for ClusterMetrics {
    fn default() -> Self {
        Self::new()
    }
}
