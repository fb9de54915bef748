//! The admin listener: `/healthz`, `/readyz`, `/metrics`, `POST /revocations` and the
//! grant JWT keys at `/.well-known/jwks.json`.
//! Runs as a pingora service so it starts and drains with the gateway.
//!
//! With `admin.bearer_secret` set, `/metrics` and `/revocations` require
//! `Authorization: Bearer <secret>`; the probes stay open. Without it the revocation
//! endpoint is off (it changes what the gateway lets through).
//!
//! The listening socket is bound before the gateway starts ([`crate::server`]) and put in
//! pingora's table of listening sockets, so a graceful upgrade hands it over.

use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use serde::Deserialize;
use serde_json::json;

use crate::cluster::Revocations;
use crate::connections::Accepting;
use fapi_enforcement::cache::{ServerLinks, TokenKey};
use fapi_enforcement::config::Readiness;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::resilience::CircuitState;
use fapi_enforcement::revocation::{Revocation, Revoked};

/// What the admin endpoints read and act on.
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub servers: Arc<ServerLinks>,
    pub bearer_secret: Option<String>,
    /// Whether the proxy listener is accepting connections.
    pub accepting: Accepting,
    /// The one place revocations are applied (locally, and to the fleet's feed).
    pub revocations: Arc<Revocations>,
    /// What `/readyz` reports on.
    pub readiness: Readiness,
    /// The Security Event Token receiver, with `[signals]`.
    pub signals: Option<Arc<fapi_enforcement::signals::SignalReceiver>>,
    /// The configuration in force (for the JWKS of its grant JWT keys).
    pub live: Arc<arc_swap::ArcSwap<fapi_enforcement::enforcer::Live>>,
}

pub struct AdminService {
    address: SocketAddr,
    /// Bound already; `None` only in an upgrade whose old process kept the socket (it is
    /// then bound once the old process lets go of the port).
    listener: Option<std::net::TcpListener>,
    router: Option<Router>,
    readiness: Readiness,
    /// Its transmitters' keys are fetched when the service starts.
    signals: Option<Arc<fapi_enforcement::signals::SignalReceiver>>,
}

impl AdminService {
    pub fn new(address: SocketAddr, listener: Option<std::net::TcpListener>, state: Arc<AdminState>) -> AdminService {
        let readiness = state.readiness;
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/revocations", post(revoke))
            .route(fapi_enforcement::grant_jwt::JWKS_PATH, get(jwks));
        let router = crate::signal_receiver::route(router, &state);
        let signals = state.signals.clone();
        AdminService { address, listener, router: Some(router.with_state(state)), readiness, signals }
    }
}

type Shared = State<Arc<AdminState>>;

fn authorized(state: &AdminState, headers: &HeaderMap) -> bool {
    let Some(secret) = &state.bearer_secret else { return true };
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(presented.as_bytes(), secret.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [("www-authenticate", "Bearer realm=\"fapi-gateway-admin\"")],
        "admin bearer secret required\n",
    )
        .into_response()
}

/// Ready while the proxy listener accepts connections (the configuration is loaded before
/// the listeners start) and, with `readiness = "authorization_servers"`, no circuit to an
/// authorization server is open.
async fn readyz(State(s): Shared) -> Response {
    if !s.accepting.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: the proxy listener is not accepting connections\n")
            .into_response();
    }
    if s.readiness == Readiness::Listeners {
        return "ready\n".into_response();
    }
    let mut open: Vec<&str> =
        s.servers.values().filter(|l| l.breaker.state() == CircuitState::Open).map(|l| l.name.as_str()).collect();
    if open.is_empty() {
        return "ready\n".into_response();
    }
    open.sort();
    let text = format!("not ready: circuit open to authorization server {}\n", open.join(", "));
    (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
}

/// The public keys of the grant JWTs (open, like the probes: they are public keys).
async fn jwks(State(s): Shared) -> Response {
    match crate::jwks::jwks(&s.live.load()) {
        Some(body) => {
            let [a, b] = crate::jwks::headers();
            ([(a.0, a.1), (b.0, b.1)], body).into_response()
        }
        None => (StatusCode::NOT_FOUND, "no grant JWT keys: gateway.toml has no [grant_jwt]\n").into_response(),
    }
}

async fn metrics(State(s): Shared, headers: HeaderMap) -> Response {
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let mut entries = 0;
    for link in s.servers.values() {
        link.cache.run_pending_tasks().await;
        entries += link.cache.entry_count();
    }
    s.metrics.cache_entries.set(entries as i64);
    crate::connections::log_noise::drain_into(&s.metrics);
    ([("content-type", "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationRequest {
    consent_id: Option<String>,
    token: Option<String>,
    /// Limits the revocation to one server's cache; all by default.
    authorization_server: Option<String>,
}

/// Drops cached introspection results for a consent (every token of it) or one token.
async fn revoke(State(s): Shared, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if s.bearer_secret.is_none() {
        return (StatusCode::FORBIDDEN, "revocation endpoint is off: set admin.bearer_secret\n").into_response();
    }
    if !authorized(&s, &headers) {
        return unauthorized();
    }
    let bad = |m: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": m}))).into_response();
    let Ok(r) = serde_json::from_slice::<RevocationRequest>(&body) else {
        return bad("body must be JSON: {\"consent_id\": \"…\"} or {\"token\": \"…\"}");
    };
    if !s.revocations.knows_server(r.authorization_server.as_deref()) {
        return bad("unknown authorization_server");
    }
    let mut evicted = 0;
    match (r.consent_id, r.token) {
        (Some(consent), None) if !consent.is_empty() => {
            let server = r.authorization_server;
            evicted += s.revocations.apply(Revocation { server, revoked: Revoked::Consent(consent.clone()) }).await;
            tracing::info!(consent_id = %consent, evicted, "consent revoked: cached results dropped");
        }
        (None, Some(token)) if !token.is_empty() => {
            // Per server: the token's key depends on it, and only the key travels.
            let servers = match r.authorization_server {
                Some(name) => vec![name],
                None => s.revocations.server_names(),
            };
            for server in servers {
                let revoked = Revoked::Token(TokenKey::new(&server, &token));
                evicted += s.revocations.apply(Revocation { server: Some(server), revoked }).await;
            }
            let tag = TokenKey::new("", &token).short();
            tracing::info!(token = %tag, evicted, "token revoked: cached results dropped");
        }
        _ => return bad("give exactly one of consent_id and token"),
    }
    Json(json!({"evicted": evicted})).into_response()
}

#[async_trait]
impl Service for AdminService {
    async fn start_service(&mut self, fds: Option<ListenFds>, mut shutdown: ShutdownWatch, _listeners_per_fd: usize) {
        let Some(router) = self.router.take() else { return };
        if let Some(signals) = self.signals.take() {
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = signals.load_keys() => {}
                    _ = stop.changed() => {}
                }
            });
        }
        let bound = match self.listener.take() {
            Some(l) => l.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(l)),
            None => {
                // An upgrade from a process that did not hand this socket over: it still
                // holds the port for a moment.
                let mut attempts = 0;
                loop {
                    match tokio::net::TcpListener::bind(self.address).await {
                        Ok(l) => break Ok(l),
                        Err(e) if attempts < 100 => {
                            if attempts == 0 {
                                tracing::warn!(address = %self.address, error = %e, "admin listener cannot bind yet; retrying for 30 s");
                            }
                            attempts += 1;
                            tokio::select! {
                                _ = shutdown.changed() => return,
                                _ = tokio::time::sleep(std::time::Duration::from_millis(300)) => {}
                            }
                        }
                        Err(e) => break Err(e),
                    }
                }
            }
        };
        let listener = match bound {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %self.address, error = %e, "admin listener cannot listen");
                return;
            }
        };
        // In pingora's table, the socket goes to the next process on a graceful upgrade.
        if let Some(fds) = &fds {
            fds.lock().add(self.address.to_string(), listener.as_raw_fd());
        }
        tracing::info!(
            listener = "admin",
            address = %self.address,
            readiness = ?self.readiness,
            "listening: /healthz, /readyz, /metrics, /revocations"
        );
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    }

    fn name(&self) -> &str {
        "fapi-gateway admin"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.address.to_string()])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq() {
        assert!(super::constant_time_eq(b"abc", b"abc"));
        assert!(!super::constant_time_eq(b"abc", b"abd"));
        assert!(!super::constant_time_eq(b"abc", b"abcd"));
    }
}
