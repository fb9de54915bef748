//! `[listener]`: where the gateway listens, its TLS, and where client certificates come from.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::file::ListenerSection;
use crate::diagnostics::Diagnostics;

/// The validated `[listener]`.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// `IP:PORT` of the listener.
    pub address: SocketAddr,
    /// The server certificate and key; absent only behind a proxy with `tls = false`.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The PEM bundle client certificates must chain to.
    pub client_ca: PathBuf,
    /// Certificate revocation lists for client certificates.
    pub crls: Vec<PathBuf>,
    /// Whether HTTP/2 is offered by ALPN besides HTTP/1.1.
    pub http2: bool,
    /// TLS versions and cipher suites offered.
    pub tls_profile: TlsProfile,
    /// Where the client certificate comes from.
    pub client_certificates: ClientCertificateSource,
    /// What the listener serves: the proxy (`mtls`, `behind_proxy`), or the decision alone
    /// (`forward_auth`).
    pub mode: ListenerMode,
    /// Lower-case `host` or `host:port`; empty: any Host is served.
    pub server_names: Vec<String>,
}

/// How the listener receives its clients (`listener.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerMode {
    /// The client certificate comes from this listener's TLS handshake.
    Mtls,
    /// From a header set by a TLS-terminating load balancer (RFC 9440).
    BehindProxy,
    /// From a header set by a TLS-terminating proxy too, and the listener answers the
    /// decision alone, for that proxy to forward (nginx `auth_request`, Caddy `forward_auth`).
    ForwardAuth,
}

/// Which TLS versions and cipher suites the listener offers (`listener.tls_profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    ProxyHeader {
        /// The proxies' addresses.
        trusted: Vec<Cidr>,
        /// The header's format.
        format: CertificateHeader,
    },
}

/// How a proxy passes the client certificate (`listener.client_cert_header`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum CertificateHeader {
    /// RFC 9440 `Client-Cert` (and `Client-Cert-Chain`).
    #[default]
    #[serde(rename = "rfc9440")]
    Rfc9440,
    /// `X-SSL-Client-Cert`: URL-encoded PEM (nginx, AWS API Gateway authorizers).
    #[serde(rename = "x-ssl-client-cert")]
    XSslClientCert,
}

/// An address range, e.g. `10.0.0.0/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::1/128` or a single address.
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

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
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

/// Validates `[listener]`; `None` when its address is unusable (an error is recorded).
pub(super) fn validate(l: &ListenerSection, d: &mut Diagnostics) -> Option<ListenerConfig> {
    let address = super::socket_address(&l.address, d);
    let mode = *l.mode.get_ref();
    let behind_proxy = mode != ListenerMode::Mtls;
    let wants_tls = !behind_proxy || l.tls;
    let tls = match (&l.certificate, &l.private_key, wants_tls) {
        (Some(c), Some(k), true) => Some((
            d.existing_file(c.get_ref(), c.span(), "certificate"),
            d.existing_file(k.get_ref(), k.span(), "private key"),
        )),
        (_, _, true) => {
            let at = d.key(&["listener", "certificate"]);
            d.error(at, "listener.certificate and listener.private_key are required for TLS");
            None
        }
        (_, _, false) => None,
    };
    let client_ca = d.existing_file(l.client_ca.get_ref(), l.client_ca.span(), "client CA");
    let crls = l.crls.iter().map(|c| d.existing_file(c.get_ref(), c.span(), "CRL")).collect();
    if *l.tls_profile.get_ref() == TlsProfile::Compatible {
        d.warn(
            Some(l.tls_profile.span()),
            "listener.tls_profile `compatible` allows TLS 1.2 suites FAPI does not permit (ChaCha20-Poly1305)",
        );
    }
    let client_certificates = if behind_proxy {
        let mut trusted = Vec::new();
        for c in &l.trusted_proxies {
            match Cidr::parse(c.get_ref()) {
                Ok(cidr) => trusted.push(cidr),
                Err(m) => d.error(Some(c.span()), m),
            }
        }
        if l.trusted_proxies.is_empty() {
            let (name, whose) = match mode {
                ListenerMode::ForwardAuth => ("forward_auth", "proxies'"),
                _ => ("behind_proxy", "load balancers'"),
            };
            let at = d.key(&["listener", "mode"]);
            d.error(at, format!("listener.mode `{name}` needs trusted_proxies (the {whose} addresses)"));
        }
        ClientCertificateSource::ProxyHeader { trusted, format: l.client_cert_header }
    } else {
        if !l.trusted_proxies.is_empty() {
            let at = d.key(&["listener", "trusted_proxies"]);
            d.warn(at, "listener.trusted_proxies is ignored in mode `mtls`");
        }
        ClientCertificateSource::Handshake
    };
    let mut server_names = Vec::new();
    for name in &l.server_names {
        let text = name.get_ref().to_ascii_lowercase();
        match text.parse::<http::uri::Authority>() {
            Ok(a) if a.as_str() == text && !text.contains('@') => server_names.push(text),
            _ => d.error(
                Some(name.span()),
                format!("listener.server_names: `{}` is not a host or host:port", name.get_ref()),
            ),
        }
    }
    Some(ListenerConfig {
        address: address?,
        tls,
        client_ca,
        crls,
        http2: l.http2,
        tls_profile: *l.tls_profile.get_ref(),
        client_certificates,
        mode,
        server_names,
    })
}
