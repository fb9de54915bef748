//! `[upstreams]`: the bank backends, by name. Each is either a URL (`gobank =
//! "http://127.0.0.1:8070"`, the form of earlier versions) or a table with several
//! targets, TLS to the bank (its CA, the gateway's client certificate, SNI), the
//! balancing, active health checks, passive ejection, timeouts and the connect retry.
//!
//! Certificates and keys are read here, so `check` reports a bad file with its line; the
//! gateway application turns the validated [`UpstreamSettings`] into pingora peers.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::Diagnostics;
use crate::policy::Upstream;

/// One `[upstreams]` entry as written.
#[derive(Debug)]
pub(super) enum UpstreamEntry {
    /// `name = "http://host:port"`.
    Url(String),
    /// `[upstreams.name]` with its keys.
    Table(Box<UpstreamSection>),
}

impl<'de> Deserialize<'de> for UpstreamEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntryVisitor;
        impl<'de> Visitor<'de> for EntryVisitor {
            type Value = UpstreamEntry;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a URL (\"https://host:port\") or a table with `targets`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<UpstreamEntry, E> {
                Ok(UpstreamEntry::Url(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<UpstreamEntry, A::Error> {
                let section = UpstreamSection::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(UpstreamEntry::Table(Box::new(section)))
            }
        }
        deserializer.deserialize_any(EntryVisitor)
    }
}

/// `[upstreams.NAME]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct UpstreamSection {
    /// `http://host:port`, `https://host:port` or `host:port` (plain HTTP), one per backend
    /// instance.
    #[serde(default)]
    targets: Vec<Spanned<String>>,
    /// One target (instead of `targets`).
    address: Option<Spanned<String>>,
    /// The name sent in SNI and checked against the bank's certificate (default: the
    /// targets' host).
    sni: Option<Spanned<String>>,
    /// PEM bundle of the CAs the bank's certificate must chain to (default: the system's).
    ca: Option<Spanned<String>>,
    /// The gateway's own client certificate chain (PEM), for mutual TLS to the bank.
    client_certificate: Option<Spanned<String>>,
    /// Its private key (PEM).
    client_private_key: Option<Spanned<String>>,
    #[serde(default = "yes")]
    verify_hostname: bool,
    #[serde(default)]
    balancing: Balancing,
    connect_timeout_ms: Option<Spanned<u64>>,
    read_timeout_ms: Option<Spanned<u64>>,
    #[serde(default = "default_total_ms")]
    total_timeout_ms: Spanned<u64>,
    #[serde(default = "yes")]
    retry_failed_connect: bool,
    #[serde(default = "default_ejection_ms")]
    ejection_ms: Spanned<u64>,
    health_check: Option<Spanned<HealthCheckSection>>,
}

/// `[upstreams.NAME.health_check]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthCheckSection {
    path: Spanned<String>,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
    #[serde(default = "default_check_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "one")]
    healthy_threshold: usize,
    #[serde(default = "default_unhealthy")]
    unhealthy_threshold: usize,
    host: Option<String>,
}

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn default_unhealthy() -> usize {
    2
}
fn default_total_ms() -> Spanned<u64> {
    Spanned::new(0..0, 60_000)
}
fn default_ejection_ms() -> Spanned<u64> {
    Spanned::new(0..0, 10_000)
}
fn default_interval_ms() -> u64 {
    5_000
}
fn default_check_timeout_ms() -> u64 {
    1_000
}

/// How a request picks one of an upstream's targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// Each target in turn.
    #[default]
    RoundRobin,
    /// By the token's consent id (consistent hashing): one consent stays on one target
    /// while it is up. Requests without a consent go round robin.
    ConsentHash,
}

/// TLS from the gateway to the bank.
#[derive(Clone)]
pub struct UpstreamTls {
    /// The name sent in SNI and verified against the bank's certificate.
    pub sni: String,
    /// Whether the certificate must name `sni` (it must always chain to `ca`).
    pub verify_hostname: bool,
    /// DER certificates of the CAs trusted for the bank; `None`: the system's roots.
    pub ca: Option<Vec<Vec<u8>>>,
    /// Where `ca` was read from.
    pub ca_file: Option<PathBuf>,
    /// The gateway's client certificate chain (DER, leaf first) and key (DER), for mutual TLS.
    pub client_identity: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// Where the client certificate was read from.
    pub client_certificate_file: Option<PathBuf>,
}

// The key never reaches a log: files and a digest of the material only (reload compares this).
impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        for der in self.ca.iter().flatten() {
            digest.update(der);
        }
        if let Some((chain, key)) = &self.client_identity {
            chain.iter().for_each(|c| digest.update(c));
            digest.update(key);
        }
        let digest = digest.finalize();
        f.debug_struct("UpstreamTls")
            .field("sni", &self.sni)
            .field("verify_hostname", &self.verify_hostname)
            .field("ca_file", &self.ca_file)
            .field("client_certificate_file", &self.client_certificate_file)
            .field("material", &format_args!("{:02x}{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2], digest[3]))
            .finish()
    }
}

/// Active HTTP health checks of every target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// `GET` this path; a 200 is healthy.
    pub path: String,
    /// The `Host` header of the check (default: the SNI name, else the target).
    pub host: Option<String>,
    /// Time between rounds of checks.
    pub interval: Duration,
    /// Connecting and answering may take this long.
    pub timeout: Duration,
    /// Consecutive successes that bring a target back.
    pub healthy_threshold: usize,
    /// Consecutive failures that take a target out.
    pub unhealthy_threshold: usize,
}

/// A validated upstream: where it is, how to reach it.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// Its name in policy files.
    pub name: String,
    /// Each backend instance, resolved once at load.
    pub targets: Vec<SocketAddr>,
    /// `Some` for `https` targets.
    pub tls: Option<UpstreamTls>,
    /// How a target is picked.
    pub balancing: Balancing,
    /// TCP connect (and, for TLS, the handshake) may take this long per attempt.
    pub connect_timeout: Duration,
    /// Waiting for the bank's next bytes may take this long.
    pub read_timeout: Duration,
    /// From the first connect attempt to the bank's response header, retries included.
    pub total_timeout: Duration,
    /// Whether an idempotent request whose connect failed is tried once on another target.
    pub retry_failed_connect: bool,
    /// How long a target whose connect failed stays out (without health checks; with
    /// them, until a check passes).
    pub ejection: Duration,
    /// Active health checks, if configured.
    pub health_check: Option<HealthCheck>,
}

/// The timeouts `[forwarding]` sets for every upstream that sets none.
#[derive(Debug, Clone, Copy)]
pub(super) struct DefaultTimeouts {
    pub connect: Duration,
    pub read: Duration,
}

/// Validates `[upstreams]`. Returns the names policies may use (an invalid upstream too,
/// so a policy naming it does not add "unknown upstream" to the upstream's own error) and
/// the settings of the valid ones.
pub(super) fn validate_all(
    section: &BTreeMap<String, Spanned<UpstreamEntry>>,
    defaults: DefaultTimeouts,
    d: &mut Diagnostics,
) -> (BTreeMap<String, Upstream>, BTreeMap<String, UpstreamSettings>) {
    let mut names = BTreeMap::new();
    let mut settings = BTreeMap::new();
    for (name, entry) in section {
        let errors_before = d.errors.len();
        let single;
        let section: &UpstreamSection = match entry.get_ref() {
            UpstreamEntry::Url(url) => {
                single = UpstreamSection::single(url, entry.span());
                &single
            }
            UpstreamEntry::Table(t) => t,
        };
        let upstream = validate(name, section, entry.span(), defaults, d);
        let address = upstream.as_ref().map(|u| u.targets[0]).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        names.insert(name.clone(), Upstream { name: name.clone(), address });
        match upstream {
            Some(u) if d.errors.len() == errors_before => {
                settings.insert(name.clone(), u);
            }
            _ => {}
        }
    }
    (names, settings)
}

impl UpstreamSection {
    /// The table a plain URL stands for.
    fn single(url: &str, span: std::ops::Range<usize>) -> UpstreamSection {
        UpstreamSection {
            targets: vec![Spanned::new(span, url.to_string())],
            address: None,
            sni: None,
            ca: None,
            client_certificate: None,
            client_private_key: None,
            verify_hostname: true,
            balancing: Balancing::RoundRobin,
            connect_timeout_ms: None,
            read_timeout_ms: None,
            total_timeout_ms: default_total_ms(),
            retry_failed_connect: true,
            ejection_ms: default_ejection_ms(),
            health_check: None,
        }
    }
}

type Target = (bool, String, SocketAddr);

fn validate(
    name: &str,
    u: &UpstreamSection,
    at: std::ops::Range<usize>,
    defaults: DefaultTimeouts,
    d: &mut Diagnostics,
) -> Option<UpstreamSettings> {
    let mut written: Vec<&Spanned<String>> = u.targets.iter().collect();
    written.extend(u.address.iter());
    if written.is_empty() {
        d.error(Some(at), format!("upstream `{name}` has no `targets` (e.g. targets = [\"https://10.0.0.1:8443\"])"));
        return None;
    }
    if !u.targets.is_empty() && u.address.is_some() {
        d.error(Some(u.address.as_ref()?.span()), format!("upstream `{name}`: set `targets` or `address`, not both"));
    }
    let mut targets = Vec::new();
    let mut schemes = Vec::new();
    let mut hosts = Vec::new();
    for t in &written {
        if let Some((tls, host, address)) = target(t.get_ref(), name, &t.span(), d) {
            if targets.contains(&address) {
                d.error(Some(t.span()), format!("upstream `{name}`: target {address} is listed twice"));
            }
            targets.push(address);
            schemes.push(tls);
            hosts.push(host);
        }
    }
    if targets.len() != written.len() {
        return None;
    }
    let tls = schemes[0];
    if schemes.iter().any(|s| *s != tls) {
        d.error(Some(written[0].span()), format!("upstream `{name}`: all targets must be https, or all http"));
    }
    let tls_keys = [&u.sni, &u.ca, &u.client_certificate, &u.client_private_key];
    if !tls {
        if let Some(key) = tls_keys.iter().find_map(|k| k.as_ref()) {
            d.error(
                Some(key.span()),
                format!("upstream `{name}`: TLS settings for a plain http upstream (write its targets as https://…)"),
            );
        }
    }
    let tls = if tls { upstream_tls(name, u, &hosts, at, d) } else { None };

    let mut duration = |ms: Option<&Spanned<u64>>, key: &str, default: Duration| -> Duration {
        match ms {
            Some(ms) if *ms.get_ref() == 0 => {
                d.error(Some(ms.span()), format!("upstream `{name}`: {key} must be above 0"));
                default
            }
            Some(ms) => Duration::from_millis(*ms.get_ref()),
            None => default,
        }
    };
    let connect_timeout = duration(u.connect_timeout_ms.as_ref(), "connect_timeout_ms", defaults.connect);
    let read_timeout = duration(u.read_timeout_ms.as_ref(), "read_timeout_ms", defaults.read);
    let total_timeout = duration(Some(&u.total_timeout_ms), "total_timeout_ms", Duration::from_secs(60));
    let ejection = duration(Some(&u.ejection_ms), "ejection_ms", Duration::from_secs(10));
    if total_timeout < connect_timeout {
        d.warn(
            Some(u.total_timeout_ms.span()),
            format!("upstream `{name}`: total_timeout_ms is below connect_timeout_ms: the total bounds every attempt"),
        );
    }
    let health_check = u.health_check.as_ref().and_then(|h| health_check(name, h, d));
    Some(UpstreamSettings {
        name: name.to_string(),
        targets,
        tls,
        balancing: u.balancing,
        connect_timeout,
        read_timeout,
        total_timeout,
        retry_failed_connect: u.retry_failed_connect,
        ejection,
        health_check,
    })
}

fn health_check(name: &str, h: &Spanned<HealthCheckSection>, d: &mut Diagnostics) -> Option<HealthCheck> {
    let c = h.get_ref();
    let at = Some(c.path.span());
    let path = c.path.get_ref();
    if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
        d.error(at.clone(), format!("upstream `{name}`: health_check.path `{path}` must be a path starting with /"));
    }
    for (key, v) in [("interval_ms", c.interval_ms), ("timeout_ms", c.timeout_ms)] {
        if v == 0 {
            d.error(at.clone(), format!("upstream `{name}`: health_check.{key} must be above 0"));
        }
    }
    for (key, v) in [("healthy_threshold", c.healthy_threshold), ("unhealthy_threshold", c.unhealthy_threshold)] {
        if v == 0 {
            d.error(at.clone(), format!("upstream `{name}`: health_check.{key} must be at least 1"));
        }
    }
    if let Some(host) = &c.host {
        if http::HeaderValue::from_str(host).is_err() {
            d.error(at.clone(), format!("upstream `{name}`: health_check.host `{host}` is not a valid Host"));
        }
    }
    Some(HealthCheck {
        path: path.clone(),
        host: c.host.clone(),
        interval: Duration::from_millis(c.interval_ms.max(1)),
        timeout: Duration::from_millis(c.timeout_ms.max(1)),
        healthy_threshold: c.healthy_threshold.max(1),
        unhealthy_threshold: c.unhealthy_threshold.max(1),
    })
}

fn upstream_tls(
    name: &str,
    u: &UpstreamSection,
    hosts: &[String],
    at: std::ops::Range<usize>,
    d: &mut Diagnostics,
) -> Option<UpstreamTls> {
    let sni = match &u.sni {
        Some(s) if s.get_ref().is_empty() || rustls_pki_name(s.get_ref()).is_none() => {
            d.error(
                Some(s.span()),
                format!("upstream `{name}`: sni `{}` is not a DNS name or IP address", s.get_ref()),
            );
            return None;
        }
        Some(s) => s.get_ref().clone(),
        None => {
            if hosts.iter().any(|h| *h != hosts[0]) {
                d.error(
                    Some(at),
                    format!("upstream `{name}`: its https targets have different hosts: set `sni` to the name their certificates carry"),
                );
                return None;
            }
            hosts[0].clone()
        }
    };
    let ca = u.ca.as_ref().and_then(|f| {
        let path = d.base.join(f.get_ref());
        match read_certificates(&path) {
            Ok(c) => Some((c, path)),
            Err(m) => {
                d.error(Some(f.span()), format!("upstream `{name}`: ca {m}"));
                None
            }
        }
    });
    let ca_failed = u.ca.is_some() && ca.is_none();
    let client_identity = match (&u.client_certificate, &u.client_private_key) {
        (None, None) => None,
        (Some(c), None) | (None, Some(c)) => {
            d.error(
                Some(c.span()),
                format!("upstream `{name}`: client_certificate and client_private_key go together"),
            );
            return None;
        }
        (Some(c), Some(k)) => {
            let cert_path = d.base.join(c.get_ref());
            let chain = match read_certificates(&cert_path) {
                Ok(chain) => chain,
                Err(m) => {
                    d.error(Some(c.span()), format!("upstream `{name}`: client_certificate {m}"));
                    return None;
                }
            };
            let key = match read_key(&d.base.join(k.get_ref())) {
                Ok(key) => key,
                Err(m) => {
                    d.error(Some(k.span()), format!("upstream `{name}`: client_private_key {m}"));
                    return None;
                }
            };
            Some((chain, key, cert_path))
        }
    };
    if ca_failed {
        return None;
    }
    let (ca, ca_file) = match ca {
        Some((c, p)) => (Some(c), Some(p)),
        None => (None, None),
    };
    let (client_identity, client_certificate_file) = match client_identity {
        Some((chain, key, path)) => (Some((chain, key)), Some(path)),
        None => (None, None),
    };
    Some(UpstreamTls { sni, verify_hostname: u.verify_hostname, ca, ca_file, client_identity, client_certificate_file })
}

fn rustls_pki_name(s: &str) -> Option<()> {
    rustls::pki_types::ServerName::try_from(s.to_string()).ok().map(|_| ())
}

fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no CERTIFICATE in it", path.display()));
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    match rustls_pemfile::private_key(&mut &pem[..]) {
        Ok(Some(key)) => Ok(key.secret_der().to_vec()),
        Ok(None) => Err(format!("{}: no PRIVATE KEY in it", path.display())),
        Err(e) => Err(format!("{}: not PEM: {e}", path.display())),
    }
}

/// One target: `http://host:port`, `https://host:port` or `host:port` (http); the host is
/// resolved once, at load. Returns whether it is TLS, its host and its address.
fn target(written: &str, name: &str, span: &std::ops::Range<usize>, d: &mut Diagnostics) -> Option<Target> {
    match parse_target(written) {
        Ok(t) => Some(t),
        Err(m) => {
            d.error(Some(span.clone()), format!("upstream `{name}`: {m}"));
            None
        }
    }
}

/// Parses one target (see [`target`]).
pub(super) fn parse_target(written: &str) -> Result<Target, String> {
    let url = if written.contains("://") { written.to_string() } else { format!("http://{written}") };
    let uri: http::Uri = url.parse().map_err(|_| format!("`{written}` is not a URL or host:port"))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(format!("`{written}` must start with http:// or https://")),
    };
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("`{written}` must not have a path (routes add it)"));
    }
    let host = uri.host().ok_or_else(|| format!("`{written}` has no host"))?;
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let address = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve `{host}`: {e}"))?
        .next()
        .ok_or_else(|| format!("`{host}` resolves to no address"))?;
    Ok((tls, host, address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    const BASE: &str = r#"[listener]
address = "127.0.0.1:8443"
certificate = "c.pem"
private_key = "k.pem"
client_ca = "ca.pem"
[authorization_server]
introspection_endpoint = "https://127.0.0.1:9443/introspect"
client_id = "gw"
client_secret = "s"
"#;

    /// Parses BASE + `upstreams` in a folder with a policy naming `gobank`; Ok(settings of
    /// gobank) or the problems as `line:message`.
    fn parse(upstreams: &str) -> Result<UpstreamSettings, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        let pki = rcgen::generate_simple_self_signed(vec!["bank.internal".to_string()]).unwrap();
        std::fs::write(dir.path().join("bank-ca.pem"), pki.cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), pki.cert.pem()).unwrap();
        std::fs::write(dir.path().join("client.key"), pki.key_pair.serialize_pem()).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let policy =
            "[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n[[route]]\npath = \"/accounts\"\n";
        std::fs::write(dir.path().join("policies/gobank.toml"), policy).unwrap();
        let source = format!("{BASE}{upstreams}");
        match GatewayConfig::parse(&dir.path().join("gateway.toml"), &source) {
            Ok(c) => Ok(c.upstream_settings["gobank"].clone()),
            Err(e) => Err(e.0.iter().map(|e| format!("{}:{}", e.line.unwrap_or(0), e.message)).collect()),
        }
    }

    #[test]
    fn the_url_form_of_earlier_versions_still_loads() {
        let u = parse("[upstreams]\ngobank = \"http://127.0.0.1:8070\"\n").unwrap();
        assert_eq!(u.targets, vec!["127.0.0.1:8070".parse().unwrap()]);
        assert!(u.tls.is_none());
        assert_eq!((u.connect_timeout, u.read_timeout), (Duration::from_secs(2), Duration::from_secs(30)));
        assert_eq!(u.balancing, Balancing::RoundRobin);
        let u = parse("[upstreams.gobank]\naddress = \"127.0.0.1:8070\"\n").unwrap();
        assert_eq!(u.targets, vec!["127.0.0.1:8070".parse().unwrap()]);
    }

    #[test]
    fn a_full_tls_upstream_loads() {
        let u = parse(
            r#"[upstreams.gobank]
targets = ["https://127.0.0.1:8443", "https://127.0.0.2:8443"]
sni = "bank.internal"
ca = "bank-ca.pem"
client_certificate = "client.pem"
client_private_key = "client.key"
balancing = "consent_hash"
connect_timeout_ms = 500
read_timeout_ms = 5000
total_timeout_ms = 8000
[upstreams.gobank.health_check]
path = "/health"
interval_ms = 1000
"#,
        )
        .unwrap();
        assert_eq!(u.targets.len(), 2);
        let tls = u.tls.as_ref().unwrap();
        assert_eq!(tls.sni, "bank.internal");
        assert_eq!(tls.ca.as_ref().unwrap().len(), 1);
        assert!(tls.client_identity.is_some());
        assert!(!format!("{tls:?}").contains("PRIVATE"));
        assert_eq!(u.balancing, Balancing::ConsentHash);
        assert_eq!(u.total_timeout, Duration::from_secs(8));
        let hc = u.health_check.unwrap();
        assert_eq!((hc.path.as_str(), hc.interval, hc.unhealthy_threshold), ("/health", Duration::from_secs(1), 2));
    }

    #[test]
    fn a_bad_upstream_says_what_is_wrong_with_its_line_not_unknown_upstream() {
        let cases = [
            (
                "[upstreams.gobank]\ntargets = [\"https://127.0.0.1:1\"]\nca = \"nope.pem\"\n",
                "12:upstream `gobank`: ca ",
            ),
            (
                "[upstreams.gobank]\ntargets = [\"http://127.0.0.1:1\"]\nsni = \"x\"\n",
                "12:upstream `gobank`: TLS settings for a plain http",
            ),
            (
                "[upstreams.gobank]\ntargets = [\"https://127.0.0.1:1\"]\nclient_certificate = \"client.pem\"\n",
                "12:upstream `gobank`: client_certificate and client_private_key go together",
            ),
            (
                "[upstreams.gobank]\ntargets = [\"127.0.0.1:1\", \"https://127.0.0.1:2\"]\n",
                "11:upstream `gobank`: all targets must be https",
            ),
            ("[upstreams.gobank]\ntargets = []\n", "10:upstream `gobank` has no `targets`"),
            ("[upstreams.gobank]\ntargets = [\"127.0.0.1:1\"]\ntagets = 1\n", "12:unknown field `tagets`"),
            (
                "[upstreams.gobank]\ntargets = [\"127.0.0.1:1\"]\nbalancing = \"random\"\n",
                "12:unknown variant `random`",
            ),
            (
                "[upstreams.gobank]\ntargets = [\"127.0.0.1:1\"]\nread_timeout_ms = 0\n",
                "12:upstream `gobank`: read_timeout_ms must be above 0",
            ),
            (
                "[upstreams.gobank]\ntargets = [\"127.0.0.1:1\"]\n[upstreams.gobank.health_check]\npath = \"health\"\n",
                "13:upstream `gobank`: health_check.path",
            ),
            (
                "[upstreams]\ngobank = \"https://127.0.0.1:1/api\"\n",
                "11:upstream `gobank`: `https://127.0.0.1:1/api` must not have a path",
            ),
        ];
        for (upstreams, expected) in cases {
            let problems = parse(upstreams).unwrap_err();
            assert!(problems.iter().any(|p| p.starts_with(expected)), "{upstreams}: {problems:?}");
            assert!(!problems.iter().any(|p| p.contains("unknown upstream")), "{upstreams}: {problems:?}");
        }
    }
}
