//! `[admin]`: the admin listener and its bearer secret.

use std::net::SocketAddr;

use super::file::AdminSection;
use crate::diagnostics::Diagnostics;
use crate::secrets;

/// What `/readyz` reports on (`admin.readiness`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// Ready while the proxy listener accepts connections. An authorization server that
    /// cannot answer makes every replica refuse with 503 alike; taking them all out of the
    /// balancer would not help, so they stay in.
    #[default]
    Listeners,
    /// Also not ready while the circuit to any authorization server is open: a balancer
    /// sends traffic to replicas that can reach it (when the fault is one replica's path
    /// to the server), at the risk of emptying the pool when the server itself is down.
    AuthorizationServers,
}

/// The validated `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `IP:PORT` of the admin listener.
    pub address: SocketAddr,
    /// Required by `/metrics` and `/revocations`; the revocation endpoint is off without it.
    pub bearer_secret: Option<String>,
    /// What `/readyz` reports on.
    pub readiness: Readiness,
}

pub(super) fn validate(a: &AdminSection, d: &mut Diagnostics) -> Option<AdminConfig> {
    let span = a.bearer_secret.as_ref().or(a.bearer_secret_file.as_ref()).map(|s| s.span());
    let bearer_secret = match secrets::resolve(
        a.bearer_secret.as_ref().map(|s| s.get_ref().as_str()),
        a.bearer_secret_file.as_ref().map(|f| d.base.join(f.get_ref())).as_deref(),
        "admin.bearer_secret",
    ) {
        Ok(Some(secret)) if secret.len() < 16 => {
            d.error(span, "admin.bearer_secret must be at least 16 characters");
            None
        }
        Ok(secret) => secret,
        Err(m) => {
            d.error(span, m);
            None
        }
    };
    let address = super::socket_address(&a.address, d)?;
    Some(AdminConfig { address, bearer_secret, readiness: a.readiness })
}
