//! `gateway.toml`: the listener, the admin listener, the authorization servers, the
//! introspection cache, the identity headers set upstream, the upstreams by name, and the
//! policy folder.
//!
//! [`file`] is the file as written; one file per section turns it into the validated
//! configuration, each problem reported with its file and line through a
//! [`Diagnostics`], so `fapi-gateway check` can list them all at once.

mod admin;
mod authorization_server;
mod cache;
mod cluster;
mod connections;
mod dpop;
mod file;
mod forwarding;
mod grant_jwt;
mod limits;
mod listener;
mod logging;
mod server;
mod signals;
mod telemetry;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

pub use self::admin::{AdminConfig, Readiness};
pub use self::cluster::{redact_url, ClusterConfig};
pub use self::connections::ConnectionLimits;
pub use self::forwarding::IdentityHeaderNames;
pub use self::limits::Limits;
pub use self::listener::{CertificateHeader, Cidr, ClientCertificateSource, ListenerConfig, ListenerMode, TlsProfile};
pub use self::logging::{LogFormat, LoggingConfig};
pub use self::server::ServerConfig;
pub use self::telemetry::TracingConfig;
pub use self::upstream::{Balancing, HealthCheck, UpstreamSettings, UpstreamTls};
pub use crate::cache::CacheConfig;
pub use crate::diagnostics::{line_of, ConfigError, ConfigErrors, Diagnostics};
pub use crate::dpop::DpopConfig;
pub use crate::introspection::{AuthorizationServerConfig, ClientAuth};
pub use crate::policy::Upstream;
use crate::policy::{Binding, PolicySet};
pub use crate::signals::SignalsConfig;

/// Listener addresses given on the command line, over the file's (e.g. 0.0.0.0 inside a
/// container while the file says 127.0.0.1). Kept across reloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddressOverrides {
    /// Instead of `listener.address`.
    pub listen: Option<SocketAddr>,
    /// Instead of `admin.address`.
    pub admin_listen: Option<SocketAddr>,
}

/// The whole validated configuration.
#[derive(Debug)]
pub struct GatewayConfig {
    /// The file it was read from.
    pub source: PathBuf,
    /// Command-line addresses applied over the file's.
    pub overrides: AddressOverrides,
    /// `[listener]`.
    pub listener: ListenerConfig,
    /// `[admin]`, if any.
    pub admin: Option<AdminConfig>,
    /// `[logging]`.
    pub logging: LoggingConfig,
    /// `[limits]`.
    pub limits: Limits,
    /// `[dpop]`.
    pub dpop: DpopConfig,
    /// `[connections]`.
    pub connections: ConnectionLimits,
    /// Not errors, but worth an operator's look (`check` prints them).
    pub warnings: Vec<ConfigError>,
    /// At least one; policies name theirs (or use the only one).
    pub authorization_servers: Vec<AuthorizationServerConfig>,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[forwarding.headers]`.
    pub identity_headers: IdentityHeaderNames,
    /// Whether the client's `Authorization` header reaches the bank.
    pub forward_authorization: bool,
    /// Connecting to a bank backend may take this long.
    pub upstream_connect_timeout: Duration,
    /// Waiting for a bank backend's next bytes may take this long.
    pub upstream_read_timeout: Duration,
    /// `[upstreams]`, by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// `[upstreams]`: each one's targets, TLS, balancing, health checks and timeouts.
    pub upstream_settings: BTreeMap<String, UpstreamSettings>,
    /// The policy folder.
    pub policies_dir: PathBuf,
    /// Every API's routes, from the policy folder.
    pub policies: PolicySet,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[cluster]`, if the gateway is one of a fleet.
    pub cluster: Option<ClusterConfig>,
    /// `[signals]`: the Security Event Token receiver, if configured.
    pub signals: Option<SignalsConfig>,
    /// `[grant_jwt]`: the issuer and keys of the JWT signed for the bank, if any.
    pub grant_jwt: Option<std::sync::Arc<crate::grant_jwt::GrantJwtSettings>>,
    /// `[tracing]`: OpenTelemetry export, when switched on.
    pub tracing: Option<TracingConfig>,
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
        let file: file::ConfigFile = match crate::diagnostics::from_toml_all(path, source) {
            Ok(file) => file,
            Err(mut errors) => {
                // gateway.toml's mistakes do not hide the policies' own.
                errors.extend(policy_problems_alone(path, source));
                return Err(ConfigErrors(errors));
            }
        };
        let mut d = Diagnostics::new(path, source);
        let listener = listener::validate(&file.listener, &mut d);
        let limits = limits::validate(&file.limits);
        let dpop = dpop::validate(&file.dpop, &mut d);
        let admin = file.admin.as_ref().and_then(|a| admin::validate(a, &mut d));
        let logging = logging::validate(&file.logging, &mut d);
        let authorization_servers = authorization_server::validate_all(&file, &mut d);
        let cache = cache::validate(&file.cache, &mut d);
        let forwarding = forwarding::validate(&file.forwarding, &mut d);
        let timeouts = upstream::DefaultTimeouts { connect: forwarding.connect_timeout, read: forwarding.read_timeout };
        let (upstreams, upstream_settings) = upstream::validate_all(&file.upstreams, timeouts, &mut d);
        let connections = connections::validate(&file.connections, &mut d);
        let server = server::validate(&file.server, &mut d);
        let cluster = file.cluster.as_ref().and_then(|c| cluster::validate(c, &mut d));
        let grant_jwt = grant_jwt::validate(file.grant_jwt.as_ref(), &mut d);
        let tracing = telemetry::validate(file.tracing.as_ref(), &mut d);

        let policies_dir = d.base.join(file.policies.get_ref());
        let server_names: Vec<String> = authorization_servers.iter().map(|a| a.name.clone()).collect();
        let signals =
            file.signals.as_ref().and_then(|s| signals::validate(s, &server_names, file.admin.is_some(), &mut d));
        let policies = match PolicySet::load_dir(&policies_dir, &upstreams, &server_names) {
            Ok(p) => {
                d.warnings.extend(p.apis().iter().flat_map(|a| a.warnings.iter().cloned()));
                Some(p)
            }
            Err(ConfigErrors(mut e)) => {
                d.errors.append(&mut e);
                None
            }
        };
        if let Some(p) = &policies {
            dpop_needs_a_known_url(p, &dpop, &file.listener.server_names, &mut d);
            if file.grant_jwt.is_none() {
                grant_jwt::apis_need_keys(p, None, &mut d);
            }
            if *file.listener.mode.get_ref() == ListenerMode::ForwardAuth {
                bodies_unseen_in_forward_auth(p, &mut d);
            }
        }

        match (d.errors.is_empty(), listener, policies) {
            (true, Some(listener), Some(policies)) => Ok(GatewayConfig {
                source: path.to_path_buf(),
                overrides: AddressOverrides::default(),
                listener,
                limits,
                dpop,
                connections,
                warnings: d.warnings,
                admin,
                logging,
                authorization_servers,
                cache,
                identity_headers: forwarding.headers,
                forward_authorization: forwarding.forward_authorization,
                upstream_connect_timeout: forwarding.connect_timeout,
                upstream_read_timeout: forwarding.read_timeout,
                upstreams,
                upstream_settings,
                policies_dir,
                policies,
                server,
                cluster,
                signals,
                grant_jwt,
                tracing,
            }),
            _ => Err(ConfigErrors(d.errors)),
        }
    }
}

/// The policy folder's problems when gateway.toml itself has errors: the folder is the
/// file's `policies` when it can still be read as TOML, else `policies` beside it; the
/// upstream and authorization server names policies use are taken as they are.
fn policy_problems_alone(path: &Path, source: &str) -> Vec<ConfigError> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let folder = source
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("policies").and_then(|p| p.as_str()).map(str::to_string))
        .unwrap_or_else(|| "policies".into());
    match PolicySet::check_dir_alone(&base.join(folder)) {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(e)) => e,
    }
}

/// A DPoP proof names the URL it is for (`htu`); the gateway must know its own URL
/// rather than take it from the client's Host, or a proof made for another server passes.
fn dpop_needs_a_known_url(
    policies: &PolicySet,
    dpop: &DpopConfig,
    server_names: &[Spanned<String>],
    d: &mut Diagnostics,
) {
    if dpop.external_url.is_some() || !server_names.is_empty() {
        return;
    }
    let dpop_route = policies
        .apis()
        .iter()
        .flat_map(|a| a.routes.iter())
        .find(|r| matches!(r.binding, Binding::Dpop | Binding::MtlsOrDpop));
    if let Some(r) = dpop_route {
        d.errors.push(ConfigError::new(
            &r.file,
            Some(r.line),
            format!(
                "route `{}` takes DPoP proofs: set dpop.external_url or listener.server_names in {} (a proof's htu is never checked against the client's Host alone)",
                r.path,
                d.path.display()
            ),
        ));
    }
}

/// In forward-auth mode the proxy never shows the gateway a request body: routes that
/// check theirs (payments) refuse every request.
fn bodies_unseen_in_forward_auth(policies: &PolicySet, d: &mut Diagnostics) {
    for r in policies.apis().iter().flat_map(|a| a.routes.iter()).filter(|r| r.body_consent.is_some()) {
        d.warnings.push(ConfigError::new(
            &r.file,
            Some(r.line),
            format!(
                "route `{}` checks the request body, which forward-auth does not see: its requests are refused (run the gateway in the data path for it)",
                r.path
            ),
        ));
    }
}

/// An `IP:PORT`, or an error at its span.
fn socket_address(s: &Spanned<String>, d: &mut Diagnostics) -> Option<SocketAddr> {
    match s.get_ref().parse() {
        Ok(address) => Some(address),
        Err(_) => {
            d.error(Some(s.span()), format!("`{}` is not an address of the form IP:PORT", s.get_ref()));
            None
        }
    }
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
                VALID.replace("http://127.0.0.1:8070", "ftp://127.0.0.1:8070"),
                "12:upstream `gobank`: `ftp://127.0.0.1:8070` must start with http:// or https://",
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

    /// Every problem, with file and line, in one run: gateway.toml's parse errors do not hide
    /// the policies'; an invalid upstream is reported as itself only.
    #[test]
    fn check_reports_every_problem_of_every_file_each_with_a_line() {
        let dir = folder();
        let path = dir.path().join("gateway.toml");
        let bad_policy =
            "[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\ncolour = 1\n[[route]]\npath = \"/accounts\"\nscope = []\n";
        std::fs::write(dir.path().join("policies/gobank.toml"), bad_policy).unwrap();
        let second = "[api]\nprefix = \"/other\"\nupstream = \"nowhere\"\nprofile = \"obuk\"\n[[route]]\npath = \"/x/{A...}/y\"\n";
        std::fs::write(dir.path().join("policies/other.toml"), second).unwrap();
        let all = |source: &str| -> Vec<String> {
            GatewayConfig::parse(&path, source).unwrap_err().0.iter().map(|e| e.to_string()).collect()
        };
        let gateway = dir.path().join("gateway.toml").display().to_string();
        let gobank = dir.path().join("policies/gobank.toml").display().to_string();
        let other = dir.path().join("policies/other.toml").display().to_string();
        // A syntax error in gateway.toml, two unknown keys in one policy, a bad path in another.
        let broken = VALID.replace("[upstreams]", "[upstreams\n");
        let problems = all(&broken);
        let expected = [
            format!("{gateway}:11:"),
            format!("{gobank}:5: unknown field `colour`"),
            format!("{gobank}:8: unknown field `scope`"),
            format!("{other}:6: path `/x/{{A...}}/y`: the catch-all"),
        ];
        for e in &expected {
            assert!(problems.iter().any(|p| p.starts_with(e.as_str())), "{e} in {problems:?}");
        }
        // Schema errors in gateway.toml: each unknown key, then the policies'.
        let unknown =
            VALID.replace("[upstreams]", "colour = 1\n[upstreams]").replace("client_ca", "size = 2\nclient_ca");
        let problems = all(&unknown);
        assert!(problems.iter().any(|p| p.starts_with(&format!("{gateway}:6: unknown field `size`"))), "{problems:?}");
        assert!(
            problems.iter().any(|p| p.starts_with(&format!("{gateway}:12: unknown field `colour`"))),
            "{problems:?}"
        );
        assert!(problems.iter().any(|p| p.starts_with(&format!("{gobank}:5:"))), "{problems:?}");
        // A valid gateway.toml with an invalid upstream: that error, not `unknown upstream` too.
        std::fs::remove_file(dir.path().join("policies/other.toml")).unwrap();
        std::fs::write(
            dir.path().join("policies/gobank.toml"),
            "[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n[[route]]\npath = \"/accounts\"\n",
        )
        .unwrap();
        let invalid = VALID
            .replace("http://127.0.0.1:8070", "gopher://x")
            .replace("[upstreams]", "[cache]\ncapacity = 0\n[upstreams]");
        let problems = all(&invalid);
        assert!(problems.iter().any(|p| p.starts_with(&format!("{gateway}:14: upstream `gobank`"))), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with(&format!("{gateway}:12: cache.capacity"))), "{problems:?}");
        assert!(!problems.iter().any(|p| p.contains("unknown upstream")), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn forward_auth_mode_takes_proxy_headers_and_needs_trusted_proxies() {
        let dir = folder();
        let path = dir.path().join("gateway.toml");
        let source = VALID.replace(
            "client_ca = \"ca.pem\"",
            "client_ca = \"ca.pem\"\nmode = \"forward_auth\"\ntls = false\ntrusted_proxies = [\"127.0.0.1\"]",
        );
        let c = GatewayConfig::parse(&path, &source).unwrap();
        assert_eq!(c.listener.mode, ListenerMode::ForwardAuth);
        assert!(c.listener.tls.is_none());
        assert!(matches!(c.listener.client_certificates, ClientCertificateSource::ProxyHeader { .. }));
        let untrusted = source.replace("trusted_proxies = [\"127.0.0.1\"]", "");
        let p = problems(&untrusted);
        assert!(p.iter().any(|m| m.contains("`forward_auth` needs trusted_proxies")), "{p:?}");
        assert_eq!(GatewayConfig::parse(&path, VALID).unwrap().listener.mode, ListenerMode::Mtls);
        // Routes that read their body cannot be served in this mode: said at check time.
        let payments = "\n[[route]]\nmethods = [\"POST\"]\npath = \"/pay\"\nbody_consent = \"Data.ConsentId\"\n";
        let policy = dir.path().join("policies/gobank.toml");
        let mut text = std::fs::read_to_string(&policy).unwrap();
        text.push_str(payments);
        std::fs::write(&policy, text).unwrap();
        let warned = GatewayConfig::parse(&path, &source).unwrap().warnings;
        assert!(
            warned.iter().any(|w| w.message.contains("route `/pay`") && w.message.contains("forward-auth")),
            "{warned:?}"
        );
        assert!(GatewayConfig::parse(&path, VALID).unwrap().warnings.is_empty());
    }
}
