//! `[connections]`: what one client may hold open, and for how long.

use std::path::Path;
use std::time::Duration;

use super::file::{self, ConnectionsSection};
use crate::diagnostics::Diagnostics;

/// Limits on downstream connections (`[connections]`), enforced by
/// the gateway application's accept loop. Fixed per process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From accept to the end of the TLS handshake.
    pub handshake_timeout: Duration,
    /// To the complete request head: from the end of the handshake for a connection's
    /// first request, from the request's first byte for the next ones.
    pub request_head_timeout: Duration,
    /// How long a connection may wait for its next request (HTTP/1.1 keep-alive; HTTP/2
    /// with no stream open).
    pub idle_timeout: Duration,
    /// Open downstream connections at most (handshakes included); `None`: derived at start
    /// from the open-files limit.
    pub max_connections: Option<usize>,
    /// Concurrent connections from one client address (IPv6: one /64) at most, counted at
    /// accept; trusted proxies (`listener.trusted_proxies`) are exempt.
    pub max_connections_per_ip: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        validate(&ConnectionsSection::default(), &mut Diagnostics::new(Path::new(""), ""))
    }
}

/// Validates `[connections]`.
pub(super) fn validate(c: &ConnectionsSection, d: &mut Diagnostics) -> ConnectionLimits {
    let mut seconds = |name: &str, v: f64, default: f64| {
        if v.is_finite() && v > 0.0 && v <= 3600.0 {
            Duration::from_secs_f64(v)
        } else {
            let at = d.key(&["connections", name]);
            d.error(at, format!("connections.{name} must be above 0 and at most 3600"));
            Duration::from_secs_f64(default)
        }
    };
    let handshake_timeout =
        seconds("handshake_timeout_seconds", c.handshake_timeout_seconds, file::default_handshake_timeout());
    let request_head_timeout =
        seconds("request_head_timeout_seconds", c.request_head_timeout_seconds, file::default_request_head_timeout());
    let idle_timeout = seconds("idle_timeout_seconds", c.idle_timeout_seconds, file::default_idle_timeout());
    for (name, v) in
        [("max_connections", c.max_connections.as_ref()), ("max_connections_per_ip", Some(&c.max_connections_per_ip))]
    {
        if let Some(v) = v.filter(|v| *v.get_ref() == 0) {
            d.error(Some(v.span()), format!("connections.{name} must be above 0"));
        }
    }
    ConnectionLimits {
        handshake_timeout,
        request_head_timeout,
        idle_timeout,
        max_connections: c.max_connections.as_ref().map(|v| *v.get_ref()).filter(|v| *v > 0),
        max_connections_per_ip: (*c.max_connections_per_ip.get_ref()).max(1),
    }
}
