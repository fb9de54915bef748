//! `[server]`: the process's worker threads, drain and upgrade socket.

use std::path::PathBuf;
use std::time::Duration;

use super::file::ServerSection;
use crate::diagnostics::Diagnostics;

/// The validated `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads of the proxy.
    pub threads: usize,
    /// How long SIGTERM drains before closing listeners.
    pub grace_period: Duration,
    /// How long in-flight requests may finish after that.
    pub graceful_shutdown_timeout: Duration,
    /// Where a new process (`run --upgrade`) receives the listening sockets from the old one.
    pub upgrade_socket: PathBuf,
}

pub(super) fn validate(s: &ServerSection, d: &mut Diagnostics) -> ServerConfig {
    if s.threads == 0 {
        let at = d.key(&["server", "threads"]);
        d.error(at, "server.threads must be above 0");
    }
    ServerConfig {
        threads: s.threads.max(1),
        grace_period: Duration::from_secs(s.grace_period_seconds),
        graceful_shutdown_timeout: Duration::from_secs(s.graceful_shutdown_timeout_seconds),
        upgrade_socket: PathBuf::from(&s.upgrade_socket),
    }
}
