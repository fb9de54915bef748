//! One request's access-log event and metrics, the same for the proxy and the forward-auth
//! listener.

use std::sync::Arc;
use std::time::Duration;

use crate::labels::{self, RequestLabels};

use fapi_enforcement::cache::CacheOutcome;
use fapi_enforcement::enforcer::Trace;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::Grant;

/// What the access log says of a request once it is answered.
pub struct AccessRecord<'a> {
    pub interaction_id: &'a str,
    pub method: &'a str,
    /// The path, never the query (which could carry a token the request is refused for).
    pub path: &'a str,
    /// The status written (0 when none was).
    pub status: u16,
    /// `allowed`, a refusal reason, or `none`.
    pub decision: &'a str,
    pub trace: &'a Trace,
    pub grant: Option<&'a Grant>,
    pub elapsed: Duration,
}

/// Counts the request (`requests_total`, `request_duration_seconds`) and writes its
/// access-log event (target `fapi_gateway::access`).
pub fn record(metrics: &Arc<Metrics>, r: AccessRecord<'_>) {
    let api = r.trace.api.as_deref().unwrap_or("");
    let route = r.trace.route.as_deref().unwrap_or("");
    // Unmatched paths count under the method only: their text is the client's, unbounded.
    let method = if r.trace.route.is_some() { r.method } else { "" };
    // The status as its static text (0, when none was written, is no status code).
    let code = http::StatusCode::from_u16(r.status).ok();
    let status = code.as_ref().map(http::StatusCode::as_str).unwrap_or("0");
    let handles = labels::request_handles(metrics, RequestLabels { api, route, method, status, decision: r.decision });
    handles.requests.inc();
    handles.duration.observe(r.elapsed.as_secs_f64());
    tracing::info!(
        target: "fapi_gateway::access",
        interaction_id = %r.interaction_id,
        method = %r.method,
        path = %r.path,
        status = r.status,
        decision = r.decision,
        api,
        route,
        client_id = r.grant.and_then(|g| g.client_id.as_deref()).or(r.trace.client_id.as_deref()).unwrap_or(""),
        consent_id = r.grant.and_then(|g| g.consent_id.as_deref()).or(r.trace.consent_id.as_deref()).unwrap_or(""),
        token = r.trace.token_tag.as_deref().unwrap_or(""),
        cache = r.trace.cache.map(CacheOutcome::as_str).unwrap_or(""),
        elapsed_us = r.elapsed.as_micros() as u64,
    );
}
