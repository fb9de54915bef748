//! `gateway.toml`: the listener, the admin listener, the authorization server, the
//! introspection cache, the identity headers set upstream and the upstreams by name.
//!
//! Loading validates everything it can without a network, and reports each problem with
//! its file and line (`ConfigError`), so `fapi-gateway check` can list them all at once.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

pub use crate::cache::CacheConfig;
pub use crate::diagnostics::{line_of, ConfigError, ConfigErrors};
pub use crate::dpop::DpopConfig;
pub use crate::introspection::{AuthorizationServerConfig, ClientAuth};
use crate::policy::PolicySet;
pub use crate::policy::Upstream;
use crate::secrets;

// ---- the file as written -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listener: ListenerSection,
    admin: Option<AdminSection>,
    authorization_server: Option<AuthorizationServerSection>,
    #[serde(default)]
    authorization_servers: BTreeMap<String, AuthorizationServerSection>,
    #[serde(default)]
    cache: CacheSection,
    #[serde(default)]
    forwarding: ForwardingSection,
    #[serde(default)]
    upstreams: BTreeMap<String, Spanned<String>>,
    #[serde(default = "default_policies")]
    policies: Spanned<String>,
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    logging: LoggingSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    dpop: DpopSection,
    #[serde(default)]
    connections: ConnectionsSection,
}

fn default_policies() -> Spanned<String> {
    Spanned::new(0..0, "policies".to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenerSection {
    address: Spanned<String>,
    certificate: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    client_ca: Spanned<String>,
    #[serde(default)]
    crls: Vec<Spanned<String>>,
    #[serde(default = "yes")]
    http2: bool,
    #[serde(default = "default_tls_profile")]
    tls_profile: Spanned<String>,
    /// `mtls`: the client certificate comes from this listener's TLS handshake;
    /// `behind_proxy`: from a header set by a TLS-terminating load balancer (RFC 9440).
    #[serde(default = "default_mode")]
    mode: Spanned<String>,
    /// In `behind_proxy` mode: whether this listener still speaks TLS (without client certificates).
    #[serde(default = "yes")]
    tls: bool,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default = "default_cert_header")]
    client_cert_header: Spanned<String>,
    /// The names clients reach the gateway by (`api.bank.example`, `api.bank.example:8443`);
    /// a request for another Host is refused (421). Empty: any Host.
    #[serde(default)]
    server_names: Vec<Spanned<String>>,
}

fn default_tls_profile() -> Spanned<String> {
    Spanned::new(0..0, "fapi".into())
}
fn default_mode() -> Spanned<String> {
    Spanned::new(0..0, "mtls".into())
}
fn default_cert_header() -> Spanned<String> {
    Spanned::new(0..0, "rfc9440".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitsSection {
    #[serde(default = "default_header_count")]
    max_header_count: usize,
    #[serde(default = "default_header_bytes")]
    max_header_bytes: usize,
    #[serde(default = "default_body_bytes")]
    max_body_bytes: u64,
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
struct DpopSection {
    #[serde(default = "default_dpop_age")]
    max_age_seconds: u64,
    /// The external base URL (`https://api.bank.example`) proofs' `htu` must start with;
    /// by default `https://` and the request's Host.
    external_url: Option<Spanned<String>>,
    #[serde(default)]
    require_nonce: bool,
    #[serde(default = "default_replay_capacity")]
    replay_capacity: u64,
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
struct ConnectionsSection {
    #[serde(default = "default_handshake_timeout")]
    handshake_timeout_seconds: f64,
    #[serde(default = "default_request_head_timeout")]
    request_head_timeout_seconds: f64,
    #[serde(default = "default_idle_timeout")]
    idle_timeout_seconds: f64,
    /// Default: derived from the open-files limit at start (see [`ConnectionLimits`]).
    max_connections: Option<Spanned<usize>>,
    #[serde(default = "default_max_connections_per_ip")]
    max_connections_per_ip: Spanned<usize>,
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

fn default_handshake_timeout() -> f64 {
    10.0
}
fn default_request_head_timeout() -> f64 {
    10.0
}
fn default_idle_timeout() -> f64 {
    60.0
}
fn default_max_connections_per_ip() -> Spanned<usize> {
    Spanned::new(0..0, 256)
}

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
        ConnectionsSection::default().validate(Path::new(""), "", &mut Vec::new())
    }
}

impl ConnectionsSection {
    fn validate(&self, path: &Path, source: &str, errors: &mut Vec<ConfigError>) -> ConnectionLimits {
        let mut seconds = |name: &str, v: f64, default: f64| {
            if v.is_finite() && v > 0.0 && v <= 3600.0 {
                Duration::from_secs_f64(v)
            } else {
                errors.push(ConfigError::new(
                    path,
                    None,
                    format!("connections.{name} must be above 0 and at most 3600"),
                ));
                Duration::from_secs_f64(default)
            }
        };
        let handshake_timeout =
            seconds("handshake_timeout_seconds", self.handshake_timeout_seconds, default_handshake_timeout());
        let request_head_timeout =
            seconds("request_head_timeout_seconds", self.request_head_timeout_seconds, default_request_head_timeout());
        let idle_timeout = seconds("idle_timeout_seconds", self.idle_timeout_seconds, default_idle_timeout());
        for (name, v) in [
            ("max_connections", self.max_connections.as_ref()),
            ("max_connections_per_ip", Some(&self.max_connections_per_ip)),
        ] {
            if let Some(v) = v.filter(|v| *v.get_ref() == 0) {
                errors.push(ConfigError::at(
                    path,
                    source,
                    Some(v.span()),
                    format!("connections.{name} must be above 0"),
                ));
            }
        }
        ConnectionLimits {
            handshake_timeout,
            request_head_timeout,
            idle_timeout,
            max_connections: self.max_connections.as_ref().map(|v| *v.get_ref()).filter(|v| *v > 0),
            max_connections_per_ip: (*self.max_connections_per_ip.get_ref()).max(1),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminSection {
    address: Spanned<String>,
    /// Required (as `Authorization: Bearer …`) by everything but `/healthz`; the
    /// revocation endpoint is off without it.
    bearer_secret: Option<Spanned<String>>,
    /// A file holding the bearer secret (instead of `bearer_secret`).
    bearer_secret_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoggingSection {
    #[serde(default = "default_log_format")]
    format: Spanned<String>,
    #[serde(default = "default_log_level")]
    level: Spanned<String>,
}

impl Default for LoggingSection {
    fn default() -> Self {
        LoggingSection { format: default_log_format(), level: default_log_level() }
    }
}

fn default_log_format() -> Spanned<String> {
    Spanned::new(0..0, "pretty".into())
}
fn default_log_level() -> Spanned<String> {
    Spanned::new(0..0, "info".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizationServerSection {
    /// Only in the single `[authorization_server]` form; in `[authorization_servers.NAME]` the key names it.
    name: Option<String>,
    /// With an issuer, endpoints not given come from its discovery document.
    issuer: Option<Spanned<String>>,
    introspection_endpoint: Option<Spanned<String>>,
    token_endpoint: Option<Spanned<String>>,
    jwks_uri: Option<Spanned<String>>,
    client_id: String,
    #[serde(default = "default_client_auth")]
    client_auth: Spanned<String>,
    client_secret: Option<Spanned<String>>,
    /// A file holding the client secret (instead of `client_secret`).
    client_secret_file: Option<Spanned<String>>,
    private_key: Option<Spanned<String>>,
    signing_alg: Option<Spanned<String>>,
    key_id: Option<String>,
    client_certificate: Option<Spanned<String>>,
    client_key: Option<Spanned<String>>,
    token_scope: Option<String>,
    #[serde(default)]
    signed_responses: bool,
    /// PEM bundle trusted for the server's TLS certificate; system roots are not used.
    ca: Option<Spanned<String>>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_retry_after")]
    retry_after_seconds: u64,
    #[serde(default = "default_max_concurrent")]
    max_concurrent_calls: usize,
    #[serde(default = "default_failure_threshold")]
    circuit_failure_threshold: usize,
    #[serde(default = "default_open_seconds")]
    circuit_open_seconds: f64,
}

fn default_client_auth() -> Spanned<String> {
    Spanned::new(0..0, "client_secret_basic".into())
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
struct CacheSection {
    #[serde(default = "default_max_ttl")]
    max_ttl_seconds: f64,
    #[serde(default = "default_inactive_ttl")]
    inactive_ttl_seconds: f64,
    #[serde(default = "default_capacity")]
    capacity: u64,
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
struct ForwardingSection {
    #[serde(default)]
    headers: IdentityHeaderNames,
    #[serde(default)]
    forward_authorization: bool,
    /// Connecting to a bank backend may take this long.
    #[serde(default = "default_upstream_connect_ms")]
    upstream_connect_timeout_ms: u64,
    /// Waiting for a bank backend's next bytes may take this long.
    #[serde(default = "default_upstream_read_ms")]
    upstream_read_timeout_ms: u64,
}

impl Default for ForwardingSection {
    fn default() -> Self {
        ForwardingSection {
            headers: IdentityHeaderNames::default(),
            forward_authorization: false,
            upstream_connect_timeout_ms: default_upstream_connect_ms(),
            upstream_read_timeout_ms: default_upstream_read_ms(),
        }
    }
}

fn default_upstream_connect_ms() -> u64 {
    2_000
}
fn default_upstream_read_ms() -> u64 {
    30_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSection {
    #[serde(default = "default_threads")]
    threads: usize,
    #[serde(default = "default_grace")]
    grace_period_seconds: u64,
    #[serde(default = "default_grace")]
    graceful_shutdown_timeout_seconds: u64,
    #[serde(default = "default_upgrade_socket")]
    upgrade_socket: String,
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

// ---- the validated configuration ------------------------------------------------------

/// Names of the headers through which the gateway tells the bank who is calling.
/// Whatever the client sent under these names is removed before they are set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaderNames {
    pub consent_id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: String,
    pub accounts: String,
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames {
            consent_id: "x-consent-id".into(),
            client_id: "x-client-id".into(),
            subject: "x-subject".into(),
            scopes: "x-granted-scopes".into(),
            accounts: "x-consent-accounts".into(),
        }
    }
}

impl IdentityHeaderNames {
    pub fn all(&self) -> [&str; 5] {
        [&self.consent_id, &self.client_id, &self.subject, &self.scopes, &self.accounts]
    }
}

#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// The server certificate and key; absent only behind a proxy with `tls = false`.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
    pub http2: bool,
    pub tls_profile: TlsProfile,
    pub client_certificates: ClientCertificateSource,
    /// Lower-case `host` or `host:port`; empty: any Host is served.
    pub server_names: Vec<String>,
}

/// Which TLS versions and cipher suites the listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsProfile {
    /// TLS 1.3, and TLS 1.2 with only the FAPI-permitted ECDHE AES-GCM suites.
    Fapi,
    /// Everything rustls offers (TLS 1.2 ChaCha20 too).
    Compatible,
}

/// Where the client certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCertificateSource {
    /// This listener's TLS handshake (mandatory client certificates).
    Handshake,
    /// A header set by a TLS-terminating proxy, believed only from these peers.
    ProxyHeader { trusted: Vec<Cidr>, format: CertificateHeader },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateHeader {
    /// RFC 9440 `Client-Cert` (and `Client-Cert-Chain`).
    Rfc9440,
    /// `X-SSL-Client-Cert`: URL-encoded PEM (nginx, AWS API Gateway authorizers).
    XSslClientCert,
}

/// An address range, e.g. `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let network: std::net::IpAddr = addr.parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("`{s}`: bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let bits = |a: std::net::IpAddr| -> u128 {
            match a {
                std::net::IpAddr::V4(v) => u32::from(v) as u128,
                std::net::IpAddr::V6(v) => u128::from(v),
            }
        };
        if ip.is_ipv4() != self.network.is_ipv4() {
            return false;
        }
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let shift = width - self.prefix as u32;
        if shift >= 128 {
            return true;
        }
        (bits(ip) >> shift) == (bits(self.network) >> shift)
    }
}

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    /// For bodies the gateway only forwards (routes that read theirs have `max_body_bytes`).
    pub max_body_bytes: u64,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone)]
pub struct LoggingConfig {
    pub format: LogFormat,
    /// A `tracing` filter (`info`, `fapi_gateway=debug,warn`); `RUST_LOG` wins when set.
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub address: SocketAddr,
    pub bearer_secret: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub threads: usize,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    /// Where a new process (`run --upgrade`) receives the listening sockets from the old one.
    pub upgrade_socket: PathBuf,
}

/// Listener addresses given on the command line, over the file's (e.g. 0.0.0.0 inside a
/// container while the file says 127.0.0.1). Kept across reloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressOverrides {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
}

/// The whole validated configuration.
#[derive(Debug)]
pub struct GatewayConfig {
    pub source: PathBuf,
    pub overrides: AddressOverrides,
    pub listener: ListenerConfig,
    pub admin: Option<AdminConfig>,
    pub logging: LoggingConfig,
    pub limits: Limits,
    pub dpop: DpopConfig,
    pub connections: ConnectionLimits,
    /// Not errors, but worth an operator's look (`check` prints them).
    pub warnings: Vec<ConfigError>,
    /// At least one; policies name theirs (or use the only one).
    pub authorization_servers: Vec<AuthorizationServerConfig>,
    pub cache: CacheConfig,
    pub identity_headers: IdentityHeaderNames,
    pub forward_authorization: bool,
    /// Connecting to a bank backend may take this long.
    pub upstream_connect_timeout: Duration,
    /// Waiting for a bank backend's next bytes may take this long.
    pub upstream_read_timeout: Duration,
    pub upstreams: BTreeMap<String, Upstream>,
    pub policies_dir: PathBuf,
    pub policies: PolicySet,
    pub server: ServerConfig,
}

impl GatewayConfig {
    /// Applies command-line listener addresses over the file's.
    pub fn with_overrides(mut self, o: AddressOverrides) -> Result<GatewayConfig, String> {
        if let Some(listen) = o.listen {
            self.listener.address = listen;
        }
        if let Some(admin) = o.admin_listen {
            self.admin.as_mut().ok_or("--admin-listen needs an [admin] section in the configuration")?.address = admin;
        }
        self.overrides = o;
        Ok(self)
    }

    /// Reads `path` and the policy files it points to.
    pub fn load(path: &Path) -> Result<GatewayConfig, ConfigErrors> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![ConfigError::new(path, None, format!("cannot read: {e}"))]))?;
        Self::parse(path, &source)
    }

    /// Parses `source` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(path: &Path, source: &str) -> Result<GatewayConfig, ConfigErrors> {
        let file: ConfigFile =
            toml::from_str(source).map_err(|e| ConfigErrors(vec![ConfigError::from_toml(path, source, &e)]))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut errors = Vec::new();
        let err = |errors: &mut Vec<ConfigError>, span: Range<usize>, msg: String| {
            errors.push(ConfigError::at(path, source, Some(span), msg));
        };

        let listener_address = parse_socket_addr(&file.listener.address)
            .map_err(|m| err(&mut errors, file.listener.address.span(), m))
            .ok();
        let existing_file = |p: &Spanned<String>, what: &str, errors: &mut Vec<ConfigError>| {
            let resolved = base.join(p.get_ref());
            if !resolved.is_file() {
                errors.push(ConfigError::at(
                    path,
                    source,
                    Some(p.span()),
                    format!("{what} file {} does not exist", resolved.display()),
                ));
            }
            resolved
        };
        let l = &file.listener;
        let mut warnings = Vec::new();
        let behind_proxy = match l.mode.get_ref().as_str() {
            "mtls" => false,
            "behind_proxy" => true,
            other => {
                err(&mut errors, l.mode.span(), format!("listener.mode `{other}` is not one of: mtls, behind_proxy"));
                false
            }
        };
        let wants_tls = !behind_proxy || l.tls;
        let tls = match (&l.certificate, &l.private_key, wants_tls) {
            (Some(c), Some(k), true) => {
                Some((existing_file(c, "certificate", &mut errors), existing_file(k, "private key", &mut errors)))
            }
            (_, _, true) => {
                errors.push(ConfigError::new(
                    path,
                    None,
                    "listener.certificate and listener.private_key are required for TLS",
                ));
                None
            }
            (_, _, false) => None,
        };
        let client_ca = existing_file(&l.client_ca, "client CA", &mut errors);
        let crls: Vec<PathBuf> = l.crls.iter().map(|c| existing_file(c, "CRL", &mut errors)).collect();
        let tls_profile = match l.tls_profile.get_ref().as_str() {
            "fapi" => TlsProfile::Fapi,
            "compatible" => {
                warnings.push(ConfigError::at(
                    path,
                    source,
                    Some(l.tls_profile.span()),
                    "listener.tls_profile `compatible` allows TLS 1.2 suites FAPI does not permit (ChaCha20-Poly1305)",
                ));
                TlsProfile::Compatible
            }
            other => {
                err(
                    &mut errors,
                    l.tls_profile.span(),
                    format!("listener.tls_profile `{other}` is not one of: fapi, compatible"),
                );
                TlsProfile::Fapi
            }
        };
        let client_certificates = if behind_proxy {
            let mut trusted = Vec::new();
            for c in &l.trusted_proxies {
                match Cidr::parse(c.get_ref()) {
                    Ok(cidr) => trusted.push(cidr),
                    Err(m) => err(&mut errors, c.span(), m),
                }
            }
            if l.trusted_proxies.is_empty() {
                errors.push(ConfigError::new(
                    path,
                    None,
                    "listener.mode `behind_proxy` needs trusted_proxies (the load balancers' addresses)",
                ));
            }
            let format = match l.client_cert_header.get_ref().as_str() {
                "rfc9440" => CertificateHeader::Rfc9440,
                "x-ssl-client-cert" => CertificateHeader::XSslClientCert,
                other => {
                    err(
                        &mut errors,
                        l.client_cert_header.span(),
                        format!("client_cert_header `{other}` is not one of: rfc9440, x-ssl-client-cert"),
                    );
                    CertificateHeader::Rfc9440
                }
            };
            ClientCertificateSource::ProxyHeader { trusted, format }
        } else {
            if !l.trusted_proxies.is_empty() {
                warnings.push(ConfigError::new(path, None, "listener.trusted_proxies is ignored in mode `mtls`"));
            }
            ClientCertificateSource::Handshake
        };
        let mut host_names = Vec::new();
        for name in &l.server_names {
            let text = name.get_ref().to_ascii_lowercase();
            match text.parse::<http::uri::Authority>() {
                Ok(a) if a.as_str() == text && !text.contains('@') => host_names.push(text),
                _ => err(
                    &mut errors,
                    name.span(),
                    format!("listener.server_names: `{}` is not a host or host:port", name.get_ref()),
                ),
            }
        }
        let limits = Limits {
            max_header_count: file.limits.max_header_count.max(1),
            max_header_bytes: file.limits.max_header_bytes.max(1),
            max_body_bytes: file.limits.max_body_bytes,
        };
        let dpop = DpopConfig {
            max_age: Duration::from_secs(file.dpop.max_age_seconds.clamp(1, 3600)),
            external_url: file.dpop.external_url.as_ref().and_then(|u| match u.get_ref().parse::<http::Uri>() {
                Ok(uri) if uri.scheme_str() == Some("https") && uri.host().is_some() => {
                    Some(u.get_ref().trim_end_matches('/').to_string())
                }
                _ => {
                    err(&mut errors, u.span(), format!("dpop.external_url `{}` must be an https URL", u.get_ref()));
                    None
                }
            }),
            require_nonce: file.dpop.require_nonce,
            replay_capacity: file.dpop.replay_capacity.max(1),
        };

        let admin = file.admin.as_ref().and_then(|a| {
            let span = a.bearer_secret.as_ref().or(a.bearer_secret_file.as_ref()).map(|s| s.span()).unwrap_or(0..0);
            let bearer_secret = match secrets::resolve(
                a.bearer_secret.as_ref().map(|s| s.get_ref().as_str()),
                a.bearer_secret_file.as_ref().map(|f| base.join(f.get_ref())).as_deref(),
                "admin.bearer_secret",
            ) {
                Ok(Some(secret)) if secret.len() < 16 => {
                    err(&mut errors, span, "admin.bearer_secret must be at least 16 characters".into());
                    None
                }
                Ok(secret) => secret,
                Err(m) => {
                    err(&mut errors, span, m);
                    None
                }
            };
            parse_socket_addr(&a.address)
                .map_err(|m| err(&mut errors, a.address.span(), m))
                .ok()
                .map(|address| AdminConfig { address, bearer_secret })
        });
        let log_format = match file.logging.format.get_ref().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            other => {
                err(
                    &mut errors,
                    file.logging.format.span(),
                    format!("logging.format `{other}` is not one of: pretty, json"),
                );
                LogFormat::Pretty
            }
        };
        if tracing_subscriber::EnvFilter::try_new(file.logging.level.get_ref()).is_err() {
            err(
                &mut errors,
                file.logging.level.span(),
                format!("logging.level `{}` is not a valid filter", file.logging.level.get_ref()),
            );
        }
        let mut sections: Vec<(String, &AuthorizationServerSection)> = Vec::new();
        if let Some(single) = &file.authorization_server {
            sections.push((single.name.clone().unwrap_or_else(|| "default".into()), single));
        }
        for (name, section) in &file.authorization_servers {
            sections.push((name.clone(), section));
        }
        if sections.is_empty() {
            errors.push(ConfigError::new(
                path,
                None,
                "no [authorization_server] (or [authorization_servers.NAME]) section",
            ));
        }
        if file.authorization_server.is_some() && !file.authorization_servers.is_empty() {
            errors.push(ConfigError::new(
                path,
                None,
                "use either [authorization_server] or [authorization_servers.NAME], not both",
            ));
        }
        let mut authorization_servers = Vec::new();
        for (name, asec) in sections {
            let mut fail = |span: Option<Range<usize>>, msg: String| {
                errors.push(ConfigError::at(path, source, span, format!("authorization server `{name}`: {msg}")));
            };
            let url = |fail: &mut dyn FnMut(Option<Range<usize>>, String), v: &Option<Spanned<String>>, what: &str| {
                let v = v.as_ref()?;
                match v.get_ref().parse::<http::Uri>() {
                    Ok(uri) if matches!(uri.scheme_str(), Some("https") | Some("http")) && uri.host().is_some() => {
                        Some(v.get_ref().trim_end_matches('/').to_string())
                    }
                    _ => {
                        fail(Some(v.span()), format!("{what} `{}` is not an http(s) URL", v.get_ref()));
                        None
                    }
                }
            };
            let issuer = url(&mut fail, &asec.issuer, "issuer");
            let introspection_endpoint = url(&mut fail, &asec.introspection_endpoint, "introspection_endpoint");
            let token_endpoint = url(&mut fail, &asec.token_endpoint, "token_endpoint");
            let jwks_uri = url(&mut fail, &asec.jwks_uri, "jwks_uri");
            if asec.introspection_endpoint.is_none() && asec.issuer.is_none() {
                fail(None, "give `issuer` (for discovery) or `introspection_endpoint`".into());
            }
            if asec.signed_responses && asec.issuer.is_none() {
                fail(None, "signed_responses needs `issuer` (the expected `iss` of the signed response)".into());
            }
            let secret = |fail: &mut dyn FnMut(Option<Range<usize>>, String)| {
                let span = asec.client_secret.as_ref().or(asec.client_secret_file.as_ref()).map(|s| s.span());
                match secrets::resolve(
                    asec.client_secret.as_ref().map(|s| s.get_ref().as_str()),
                    asec.client_secret_file.as_ref().map(|f| base.join(f.get_ref())).as_deref(),
                    "client_secret",
                ) {
                    Ok(Some(secret)) => secret,
                    Ok(None) => {
                        fail(
                            Some(asec.client_auth.span()),
                            format!("{} needs client_secret or client_secret_file", asec.client_auth.get_ref()),
                        );
                        String::new()
                    }
                    Err(m) => {
                        fail(span, m);
                        String::new()
                    }
                }
            };
            let file_of =
                |fail: &mut dyn FnMut(Option<Range<usize>>, String), v: &Option<Spanned<String>>, what: &str| match v {
                    Some(v) => {
                        let resolved = base.join(v.get_ref());
                        if !resolved.is_file() {
                            fail(Some(v.span()), format!("{what} file {} does not exist", resolved.display()));
                        }
                        resolved
                    }
                    None => {
                        fail(Some(asec.client_auth.span()), format!("{} needs {what}", asec.client_auth.get_ref()));
                        PathBuf::new()
                    }
                };
            let client_auth = match asec.client_auth.get_ref().as_str() {
                "client_secret_basic" => ClientAuth::SecretBasic { secret: secret(&mut fail) },
                "client_secret_post" => ClientAuth::SecretPost { secret: secret(&mut fail) },
                "private_key_jwt" => {
                    let private_key = file_of(&mut fail, &asec.private_key, "private_key");
                    let alg = asec.signing_alg.as_ref().map(|a| a.get_ref().clone()).unwrap_or_else(|| "ES256".into());
                    if !["RS256", "PS256", "ES256"].contains(&alg.as_str()) {
                        fail(
                            asec.signing_alg.as_ref().map(|a| a.span()),
                            format!("signing_alg `{alg}` is not one of RS256, PS256, ES256"),
                        );
                    }
                    ClientAuth::PrivateKeyJwt { private_key, alg, key_id: asec.key_id.clone() }
                }
                "tls_client_auth" => ClientAuth::TlsClientAuth {
                    certificate: file_of(&mut fail, &asec.client_certificate, "client_certificate"),
                    private_key: file_of(&mut fail, &asec.client_key, "client_key"),
                },
                "bearer" => {
                    if token_endpoint.is_none() && asec.issuer.is_none() {
                        fail(Some(asec.client_auth.span()), "bearer needs token_endpoint or issuer".into());
                    }
                    ClientAuth::Bearer {
                        secret: secret(&mut fail),
                        scope: asec.token_scope.clone().unwrap_or_else(|| "introspect_tokens".into()),
                    }
                }
                other => {
                    fail(
                        Some(asec.client_auth.span()),
                        format!("client_auth `{other}` is not one of: client_secret_basic, client_secret_post, private_key_jwt, tls_client_auth, bearer"),
                    );
                    ClientAuth::SecretBasic { secret: String::new() }
                }
            };
            let ca = asec.ca.is_some().then(|| file_of(&mut fail, &asec.ca, "CA"));
            if asec.timeout_ms == 0 {
                fail(None, "timeout_ms must be above 0".into());
            }
            if !(asec.circuit_open_seconds.is_finite() && (0.0..=3600.0).contains(&asec.circuit_open_seconds)) {
                fail(None, "circuit_open_seconds must be between 0 and 3600".into());
            }
            authorization_servers.push(AuthorizationServerConfig {
                name: name.clone(),
                issuer,
                introspection_endpoint,
                token_endpoint,
                jwks_uri,
                client_id: asec.client_id.clone(),
                client_auth,
                signed_responses: asec.signed_responses,
                ca,
                timeout: Duration::from_millis(asec.timeout_ms.max(1)),
                retry_after: Duration::from_secs(asec.retry_after_seconds),
                max_concurrent_calls: asec.max_concurrent_calls.max(1),
                circuit_failure_threshold: asec.circuit_failure_threshold.max(1),
                circuit_open: Duration::from_secs_f64(asec.circuit_open_seconds.clamp(0.0, 3600.0)),
            });
        }

        let cache = &file.cache;
        for (name, v) in
            [("max_ttl_seconds", cache.max_ttl_seconds), ("inactive_ttl_seconds", cache.inactive_ttl_seconds)]
        {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                errors.push(ConfigError::new(path, None, format!("cache.{name} must be between 0 and 86400")));
            }
        }
        if cache.capacity == 0 {
            errors.push(ConfigError::new(path, None, "cache.capacity must be above 0"));
        }

        for (name, ms) in [
            ("upstream_connect_timeout_ms", file.forwarding.upstream_connect_timeout_ms),
            ("upstream_read_timeout_ms", file.forwarding.upstream_read_timeout_ms),
        ] {
            if ms == 0 {
                errors.push(ConfigError::new(path, None, format!("forwarding.{name} must be above 0")));
            }
        }
        for name in file.forwarding.headers.all() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                errors.push(ConfigError::new(
                    path,
                    None,
                    format!("forwarding header name `{name}` is not a valid header name"),
                ));
            }
        }

        let mut upstreams = BTreeMap::new();
        for (name, url) in &file.upstreams {
            match parse_upstream_url(url.get_ref()) {
                Ok(address) => {
                    upstreams.insert(name.clone(), Upstream { name: name.clone(), address });
                }
                Err(m) => err(&mut errors, url.span(), format!("upstream `{name}`: {m}")),
            }
        }

        let policies_dir = base.join(file.policies.get_ref());
        let server_names: Vec<String> = authorization_servers.iter().map(|a| a.name.clone()).collect();
        let policies = match PolicySet::load_dir(&policies_dir, &upstreams, &server_names) {
            Ok(p) => {
                warnings.extend(p.apis().iter().flat_map(|a| a.warnings.iter().cloned()));
                Some(p)
            }
            Err(ConfigErrors(mut e)) => {
                errors.append(&mut e);
                None
            }
        };

        // A DPoP proof names the URL it is for (`htu`); the gateway must know its own URL
        // rather than take it from the client's Host, or a proof made for another server passes.
        if dpop.external_url.is_none() && l.server_names.is_empty() {
            let dpop_routes = policies
                .iter()
                .flat_map(|p| p.apis())
                .flat_map(|a| a.routes.iter())
                .find(|r| matches!(r.binding, crate::policy::Binding::Dpop | crate::policy::Binding::MtlsOrDpop));
            if let Some(r) = dpop_routes {
                errors.push(ConfigError::new(
                    path,
                    None,
                    format!(
                        "route `{}` ({}:{}) takes DPoP proofs: set dpop.external_url or listener.server_names (a proof's htu is never checked against the client's Host alone)",
                        r.path,
                        r.file.display(),
                        r.line
                    ),
                ));
            }
        }

        let connections = file.connections.validate(path, source, &mut errors);

        if file.server.threads == 0 {
            errors.push(ConfigError::new(path, None, "server.threads must be above 0"));
        }

        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        Ok(GatewayConfig {
            source: path.to_path_buf(),
            overrides: AddressOverrides::default(),
            listener: ListenerConfig {
                address: listener_address.expect("checked above"),
                tls,
                client_ca,
                crls,
                http2: file.listener.http2,
                tls_profile,
                client_certificates,
                server_names: host_names,
            },
            limits,
            dpop,
            connections,
            warnings,
            admin,
            logging: LoggingConfig { format: log_format, level: file.logging.level.get_ref().clone() },
            authorization_servers,
            cache: CacheConfig {
                max_ttl: Duration::from_secs_f64(cache.max_ttl_seconds),
                inactive_ttl: Duration::from_secs_f64(cache.inactive_ttl_seconds),
                capacity: cache.capacity,
            },
            identity_headers: file.forwarding.headers,
            forward_authorization: file.forwarding.forward_authorization,
            upstream_connect_timeout: Duration::from_millis(file.forwarding.upstream_connect_timeout_ms),
            upstream_read_timeout: Duration::from_millis(file.forwarding.upstream_read_timeout_ms),
            upstreams,
            policies_dir,
            policies: policies.expect("checked above"),
            server: ServerConfig {
                threads: file.server.threads,
                grace_period: Duration::from_secs(file.server.grace_period_seconds),
                graceful_shutdown_timeout: Duration::from_secs(file.server.graceful_shutdown_timeout_seconds),
                upgrade_socket: PathBuf::from(&file.server.upgrade_socket),
            },
        })
    }
}

fn parse_socket_addr(s: &Spanned<String>) -> Result<SocketAddr, String> {
    s.get_ref().parse().map_err(|_| format!("`{}` is not an address of the form IP:PORT", s.get_ref()))
}

/// Upstreams are `http://host:port`; the host is resolved once, at load.
fn parse_upstream_url(url: &str) -> Result<SocketAddr, String> {
    let uri: http::Uri = url.parse().map_err(|_| format!("`{url}` is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("https upstreams are not supported yet: use http on the bank's internal network".into())
        }
        _ => return Err(format!("`{url}` must start with http://")),
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("`{url}` must not have a path (routes add it)"));
    }
    let host = uri.host().ok_or_else(|| format!("`{url}` has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_of_counts_newlines_before_offset() {
        let s = "a\nb\nc";
        assert_eq!(line_of(s, 0), 1);
        assert_eq!(line_of(s, 2), 2);
        assert_eq!(line_of(s, 4), 3);
    }

    const VALID: &str = r#"
[listener]
address = "127.0.0.1:8443"
certificate = "c.pem"
private_key = "k.pem"
client_ca = "ca.pem"
[authorization_server]
introspection_endpoint = "https://127.0.0.1:9443/introspect"
client_id = "gw"
client_secret = "s"
[upstreams]
gobank = "http://127.0.0.1:8070"
"#;

    /// A folder with the files VALID names and one policy file.
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let policy =
            "[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n[[route]]\npath = \"/accounts\"\n";
        std::fs::write(dir.path().join("policies/gobank.toml"), policy).unwrap();
        dir
    }

    fn problems(source: &str) -> Vec<String> {
        let dir = folder();
        match GatewayConfig::parse(&dir.path().join("gateway.toml"), source) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| format!("{}:{}", e.line.unwrap_or(0), e.message)).collect(),
        }
    }

    #[test]
    fn a_valid_config_loads_with_defaults() {
        let dir = folder();
        let c = GatewayConfig::parse(&dir.path().join("gateway.toml"), VALID).unwrap();
        assert_eq!(c.listener.tls.as_ref().unwrap().0, dir.path().join("c.pem"));
        assert_eq!(c.cache.max_ttl, Duration::from_secs(30));
        assert_eq!(c.identity_headers, IdentityHeaderNames::default());
        assert_eq!(c.policies.apis().len(), 1);
        assert!(c.admin.is_none() && !c.forward_authorization);
        assert_eq!(
            (c.upstream_connect_timeout, c.upstream_read_timeout),
            (Duration::from_secs(2), Duration::from_secs(30))
        );
    }

    #[test]
    fn each_kind_of_mistake_is_reported_with_its_line() {
        let cases: Vec<(String, &str)> = vec![
            (VALID.replace("[upstreams]", "colour = 1\n[upstreams]"), "unknown field `colour`"),
            (VALID.replace("127.0.0.1:8443", "8443"), "3:`8443` is not an address"),
            (VALID.replace("\"c.pem\"", "\"missing.pem\""), "4:certificate file"),
            (
                VALID.replace("https://127.0.0.1:9443/introspect", "ftp:/x"),
                "8:authorization server `default`: introspection_endpoint `ftp:/x`",
            ),
            (
                VALID.replace("client_secret = \"s\"", "client_secret = \"\""),
                "10:authorization server `default`: client_secret is empty",
            ),
            (
                VALID.replace("http://127.0.0.1:8070", "https://127.0.0.1:8070"),
                "12:upstream `gobank`: https upstreams are not supported",
            ),
            (
                VALID.replace("[upstreams]", "[cache]\nmax_ttl_seconds = -1\n[upstreams]"),
                "cache.max_ttl_seconds must be between",
            ),
            (
                VALID.replace("[upstreams]", "[forwarding.headers]\nsubject = \"x subject\"\n[upstreams]"),
                "`x subject` is not a valid header name",
            ),
            (VALID.replace("gobank = ", "otherbank = "), "unknown upstream `gobank`"),
            (
                VALID.replace("[upstreams]", "[forwarding]\nupstream_read_timeout_ms = 0\n[upstreams]"),
                "forwarding.upstream_read_timeout_ms must be above 0",
            ),
            (VALID.replace("client_id = \"gw\"\n", ""), "missing field `client_id`"),
        ];
        for (source, expected) in cases {
            let p = problems(&source);
            assert!(p.iter().any(|m| m.contains(expected)), "expected `{expected}` in {p:?}");
        }
        assert!(problems(VALID).is_empty());
        // Several problems are reported together.
        let both = VALID.replace("127.0.0.1:8443", "8443").replace("\"c.pem\"", "\"missing.pem\"");
        assert_eq!(problems(&both).len(), 2);
    }

    #[test]
    fn upstream_urls() {
        assert_eq!(parse_upstream_url("http://127.0.0.1:8070").unwrap(), "127.0.0.1:8070".parse().unwrap());
        assert!(parse_upstream_url("https://127.0.0.1:8070").unwrap_err().contains("not supported"));
        assert!(parse_upstream_url("ftp://x").is_err());
        assert!(parse_upstream_url("http://127.0.0.1:8070/api").unwrap_err().contains("path"));
    }
}
