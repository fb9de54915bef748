//! Why the gateway could not start, or a reload was refused.

use std::net::SocketAddr;
use std::time::Duration;

use fapi_enforcement::config::ConfigErrors;
use fapi_enforcement::error::StartError;

/// A failure to start the gateway or to apply a reload; nothing half-started runs.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A listening socket could not be had (`cannot listen on 127.0.0.1:8443: address in use`).
    #[error("cannot listen on {address}: {reason}")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// Why not.
        reason: String,
    },
    /// `run --upgrade` could not take the running instance's sockets over.
    #[error("upgrade: {0}")]
    Upgrade(String),
    /// The enforcement could not be set up (certificates, keys, authorization servers).
    #[error(transparent)]
    Start(#[from] StartError),
    /// The configuration or a policy file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// The proxy listener did not start accepting in time.
    #[error("the proxy listener did not start accepting within {0:?}")]
    NotAccepting(Duration),
    /// `[cluster]` cannot be set up (its Redis URL or CA); a Redis that is merely down is
    /// no error (the gateway starts degraded).
    #[error("{0}")]
    Cluster(String),
    /// The OpenTelemetry exporter of `[tracing]` could not be set up.
    #[error("tracing: {0}")]
    Telemetry(String),
    /// A reload asks for what only a restart can do.
    #[error("{0}")]
    NeedsRestart(String),
}
