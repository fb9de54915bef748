//! pingora logs some failures of single connections at warn or error level: an HTTP/2
//! client (chosen by ALPN) that never sends a valid preface (`H2 handshake error`), a TLS
//! close that fails. One scanner or broken client would fill the log with them. They are
//! counted instead (`fapi_gateway_connection_errors_total{kind}`), and shown only when
//! the log level is `debug` or finer.

use std::sync::atomic::{AtomicU64, Ordering};

use fapi_enforcement::metrics::Metrics;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Filter};

/// Each kind: pingora's target, the start of its message, the metric label.
const KINDS: [(&str, &str, &str); 2] = [
    ("pingora_core::apps", "H2 handshake error", "h2_handshake"),
    ("pingora_core::protocols::tls", "TLS shutdown failed", "tls_shutdown"),
];

/// Counted since the metrics last took them, per kind (the log filter has no registry).
static COUNTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// The kind of per-connection noise an event is, if it is.
pub fn kind_of(target: &str, level: &Level, message: &str) -> Option<usize> {
    if *level > Level::WARN {
        return None;
    }
    KINDS.iter().position(|(t, start, _)| target.starts_with(t) && message.starts_with(start))
}

/// Adds what was counted to `connection_errors` (at each scrape).
pub fn drain_into(metrics: &Metrics) {
    for (i, (_, _, label)) in KINDS.iter().enumerate() {
        let n = COUNTS[i].swap(0, Ordering::Relaxed);
        let counter = metrics.connection_errors.with_label_values(&[label]);
        counter.inc_by(n);
    }
}

/// A per-layer filter: drops (and counts) the noise unless `show`.
pub struct ConnectionNoise {
    /// Let the events through too (the configured level is `debug` or finer).
    pub show: bool,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: Subscriber> Filter<S> for ConnectionNoise {
    fn enabled(&self, _meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _cx: &Context<'_, S>) -> bool {
        // Events from the `log` crate (pingora's) carry their real target once normalised.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() > Level::WARN || !meta.target().starts_with("pingora_core") {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        match kind_of(meta.target(), meta.level(), &message.0) {
            Some(kind) => {
                COUNTS[kind].fetch_add(1, Ordering::Relaxed);
                self.show
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_per_connection_errors_are_noise() {
        let h2 = "H2 handshake error  HandshakeError context: while h2 handshaking with client";
        assert_eq!(kind_of("pingora_core::apps", &Level::ERROR, h2), Some(0));
        assert_eq!(
            kind_of("pingora_core::protocols::tls::rustls::server", &Level::WARN, "TLS shutdown failed, x"),
            Some(1)
        );
        assert_eq!(kind_of("pingora_core::apps", &Level::ERROR, "HTTP server fails to read from downstream"), None);
        assert_eq!(kind_of("fapi_gateway_server::admin", &Level::ERROR, h2), None);
        assert_eq!(kind_of("pingora_core::apps", &Level::DEBUG, h2), None);
    }
}
