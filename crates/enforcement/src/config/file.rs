//! `gateway.toml` as written: the file's sections, each key with its default. Closed
//! vocabularies (listener mode, TLS profile, certificate header, log format, client
//! authentication, signing algorithm) are enums, so the parser names the values allowed.
//! The other files of this folder turn each section into the validated configuration.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::authorization_server::ClientAuthMethodName;
use super::forwarding::IdentityHeaderNames;
use super::listener::{CertificateHeader, ListenerMode, TlsProfile};
use super::logging::LogFormat;
use crate::introspection::SigningAlg;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConfigFile {
    pub(super) listener: ListenerSection,
    pub(super) admin: Option<AdminSection>,
    pub(super) authorization_server: Option<AuthorizationServerSection>,
    #[serde(default)]
    pub(super) authorization_servers: BTreeMap<String, AuthorizationServerSection>,
    #[serde(default)]
    pub(super) cache: CacheSection,
    #[serde(default)]
    pub(super) forwarding: ForwardingSection,
    #[serde(default)]
    pub(super) upstreams: BTreeMap<String, Spanned<super::upstream::UpstreamEntry>>,
    #[serde(default = "default_policies")]
    pub(super) policies: Spanned<String>,
    #[serde(default)]
    pub(super) server: ServerSection,
    #[serde(default)]
    pub(super) logging: LoggingSection,
    #[serde(default)]
    pub(super) limits: LimitsSection,
    #[serde(default)]
    pub(super) dpop: DpopSection,
    #[serde(default)]
    pub(super) connections: ConnectionsSection,
    pub(super) cluster: Option<super::cluster::ClusterSection>,
    pub(super) signals: Option<super::signals::SignalsSection>,
    pub(super) grant_jwt: Option<super::grant_jwt::GrantJwtSection>,
    pub(super) tracing: Option<super::telemetry::TracingSection>,
}

fn default_policies() -> Spanned<String> {
    Spanned::new(0..0, "policies".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerSection {
    pub(super) address: Spanned<String>,
    pub(super) certificate: Option<Spanned<String>>,
    pub(super) private_key: Option<Spanned<String>>,
    pub(super) client_ca: Spanned<String>,
    #[serde(default)]
    pub(super) crls: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    pub(super) http2: bool,
    #[serde(default = "default_tls_profile")]
    pub(super) tls_profile: Spanned<TlsProfile>,
    /// `mtls`: the client certificate comes from this listener's TLS handshake;
    /// `behind_proxy`: from a header set by a TLS-terminating load balancer (RFC 9440);
    /// `forward_auth`: the same, and the listener answers the decision alone.
    #[serde(default = "default_mode")]
    pub(super) mode: Spanned<ListenerMode>,
    /// In `behind_proxy` and `forward_auth` modes: whether this listener still speaks TLS
    /// (without client certificates).
    #[serde(default = "yes")]
    pub(super) tls: bool,
    #[serde(default)]
    pub(super) trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    pub(super) client_cert_header: CertificateHeader,
    /// The names clients reach the gateway by (`api.bank.example`, `api.bank.example:8443`);
    /// a request for another Host is refused (421). Empty: any Host.
    #[serde(default)]
    pub(super) server_names: Vec<Spanned<String>>,
}

fn default_tls_profile() -> Spanned<TlsProfile> {
    Spanned::new(0..0, TlsProfile::Fapi)
}
fn default_mode() -> Spanned<ListenerMode> {
    Spanned::new(0..0, ListenerMode::Mtls)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LimitsSection {
    #[serde(default = "default_header_count")]
    pub(super) max_header_count: usize,
    #[serde(default = "default_header_bytes")]
    pub(super) max_header_bytes: usize,
    #[serde(default = "default_body_bytes")]
    pub(super) max_body_bytes: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_header_count: default_header_count(),
            max_header_bytes: default_header_bytes(),
            max_body_bytes: default_body_bytes(),
        }
    }
}

fn default_header_count() -> usize {
    100
}
fn default_header_bytes() -> usize {
    16 * 1024
}
fn default_body_bytes() -> u64 {
    1024 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DpopSection {
    #[serde(default = "default_dpop_age")]
    pub(super) max_age_seconds: u64,
    /// The external base URL (`https://api.bank.example`) proofs' `htu` must start with;
    /// by default `https://` and the request's Host.
    pub(super) external_url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) require_nonce: bool,
    #[serde(default = "default_replay_capacity")]
    pub(super) replay_capacity: u64,
}

impl Default for DpopSection {
    fn default() -> Self {
        DpopSection {
            max_age_seconds: default_dpop_age(),
            external_url: None,
            require_nonce: false,
            replay_capacity: default_replay_capacity(),
        }
    }
}

fn default_dpop_age() -> u64 {
    300
}
fn default_replay_capacity() -> u64 {
    1_000_000
}

// ---- [connections]: what one client may hold open, and for how long ------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConnectionsSection {
    #[serde(default = "default_handshake_timeout")]
    pub(super) handshake_timeout_seconds: f64,
    #[serde(default = "default_request_head_timeout")]
    pub(super) request_head_timeout_seconds: f64,
    #[serde(default = "default_idle_timeout")]
    pub(super) idle_timeout_seconds: f64,
    /// Default: derived from the open-files limit at start (see [`ConnectionLimits`]).
    pub(super) max_connections: Option<Spanned<usize>>,
    #[serde(default = "default_max_connections_per_ip")]
    pub(super) max_connections_per_ip: Spanned<usize>,
}

impl Default for ConnectionsSection {
    fn default() -> Self {
        ConnectionsSection {
            handshake_timeout_seconds: default_handshake_timeout(),
            request_head_timeout_seconds: default_request_head_timeout(),
            idle_timeout_seconds: default_idle_timeout(),
            max_connections: None,
            max_connections_per_ip: default_max_connections_per_ip(),
        }
    }
}

pub(super) fn default_handshake_timeout() -> f64 {
    10.0
}
pub(super) fn default_request_head_timeout() -> f64 {
    10.0
}
pub(super) fn default_idle_timeout() -> f64 {
    60.0
}
fn default_max_connections_per_ip() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AdminSection {
    pub(super) address: Spanned<String>,
    /// Required (as `Authorization: Bearer …`) by everything but `/healthz`; the
    /// revocation endpoint is off without it.
    pub(super) bearer_secret: Option<Spanned<String>>,
    /// A file holding the bearer secret (instead of `bearer_secret`).
    pub(super) bearer_secret_file: Option<Spanned<String>>,
    /// What `/readyz` reports on.
    #[serde(default)]
    pub(super) readiness: super::admin::Readiness,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoggingSection {
    #[serde(default)]
    pub(super) format: LogFormat,
    #[serde(default = "default_log_level")]
    pub(super) level: Spanned<String>,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { format: LogFormat::default(), level: default_log_level() }
    }
}

fn default_log_level() -> Spanned<String> {
    Spanned::new(0..0, "info".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuthorizationServerSection {
    /// Only in the single `[authorization_server]` form; in `[authorization_servers.NAME]` the key names it.
    pub(super) name: Option<String>,
    /// With an issuer, endpoints not given come from its discovery document.
    pub(super) issuer: Option<Spanned<String>>,
    pub(super) introspection_endpoint: Option<Spanned<String>>,
    pub(super) token_endpoint: Option<Spanned<String>>,
    pub(super) jwks_uri: Option<Spanned<String>>,
    pub(super) client_id: String,
    #[serde(default = "default_client_auth")]
    pub(super) client_auth: Spanned<ClientAuthMethodName>,
    pub(super) client_secret: Option<Spanned<String>>,
    /// A file holding the client secret (instead of `client_secret`).
    pub(super) client_secret_file: Option<Spanned<String>>,
    pub(super) private_key: Option<Spanned<String>>,
    pub(super) signing_alg: Option<SigningAlg>,
    pub(super) key_id: Option<String>,
    pub(super) client_certificate: Option<Spanned<String>>,
    pub(super) client_key: Option<Spanned<String>>,
    pub(super) token_scope: Option<String>,
    #[serde(default)]
    pub(super) signed_responses: bool,
    /// PEM bundle trusted for the server's TLS certificate; system roots are not used.
    pub(super) ca: Option<Spanned<String>>,
    #[serde(default = "default_timeout_ms")]
    pub(super) timeout_ms: u64,
    #[serde(default = "default_retry_after")]
    pub(super) retry_after_seconds: u64,
    #[serde(default = "default_max_concurrent")]
    pub(super) max_concurrent_calls: usize,
    #[serde(default = "default_failure_threshold")]
    pub(super) circuit_failure_threshold: usize,
    #[serde(default = "default_open_seconds")]
    pub(super) circuit_open_seconds: f64,
}

fn default_client_auth() -> Spanned<ClientAuthMethodName> {
    Spanned::new(0..0, ClientAuthMethodName::ClientSecretBasic)
}

fn default_max_concurrent() -> usize {
    64
}
fn default_failure_threshold() -> usize {
    5
}
fn default_open_seconds() -> f64 {
    5.0
}

fn default_timeout_ms() -> u64 {
    2000
}
fn default_retry_after() -> u64 {
    5
}
fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CacheSection {
    #[serde(default = "default_max_ttl")]
    pub(super) max_ttl_seconds: f64,
    #[serde(default = "default_inactive_ttl")]
    pub(super) inactive_ttl_seconds: f64,
    #[serde(default = "default_capacity")]
    pub(super) capacity: u64,
}

impl Default for CacheSection {
    fn default() -> Self {
        CacheSection {
            max_ttl_seconds: default_max_ttl(),
            inactive_ttl_seconds: default_inactive_ttl(),
            capacity: default_capacity(),
        }
    }
}

fn default_max_ttl() -> f64 {
    30.0
}
fn default_inactive_ttl() -> f64 {
    5.0
}
fn default_capacity() -> u64 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ForwardingSection {
    #[serde(default = "default_identity_headers")]
    pub(super) headers: Spanned<IdentityHeaderNames>,
    #[serde(default)]
    pub(super) forward_authorization: bool,
    /// Connecting to a bank backend may take this long.
    #[serde(default = "default_upstream_connect_ms")]
    pub(super) upstream_connect_timeout_ms: Spanned<u64>,
    /// Waiting for a bank backend's next bytes may take this long.
    #[serde(default = "default_upstream_read_ms")]
    pub(super) upstream_read_timeout_ms: Spanned<u64>,
}

impl Default for ForwardingSection {
    fn default() -> Self {
        ForwardingSection {
            headers: default_identity_headers(),
            forward_authorization: false,
            upstream_connect_timeout_ms: default_upstream_connect_ms(),
            upstream_read_timeout_ms: default_upstream_read_ms(),
        }
    }
}

fn default_identity_headers() -> Spanned<IdentityHeaderNames> {
    Spanned::new(0..0, IdentityHeaderNames::default())
}
fn default_upstream_connect_ms() -> Spanned<u64> {
    Spanned::new(0..0, 2_000)
}
fn default_upstream_read_ms() -> Spanned<u64> {
    Spanned::new(0..0, 30_000)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ServerSection {
    #[serde(default = "default_threads")]
    pub(super) threads: usize,
    #[serde(default = "default_grace")]
    pub(super) grace_period_seconds: u64,
    #[serde(default = "default_grace")]
    pub(super) graceful_shutdown_timeout_seconds: u64,
    #[serde(default = "default_upgrade_socket")]
    pub(super) upgrade_socket: String,
}

fn default_upgrade_socket() -> String {
    "/tmp/fapi-gateway-upgrade.sock".into()
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            upgrade_socket: default_upgrade_socket(),
            threads: default_threads(),
            grace_period_seconds: default_grace(),
            graceful_shutdown_timeout_seconds: default_grace(),
        }
    }
}

fn default_threads() -> usize {
    2
}
fn default_grace() -> u64 {
    5
}
