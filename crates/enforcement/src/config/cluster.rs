//! `[cluster]`: the fleet's Redis, its revocation feed, the degraded-mode cap and the
//! optional shared introspection cache.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::Diagnostics;
use crate::secrets;

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterSection {
    redis_url: Spanned<String>,
    /// PEM CA bundle that signs the Redis server's certificate (`rediss://`).
    ca: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    #[serde(default = "default_stream_key")]
    stream_key: Spanned<String>,
    #[serde(default = "default_stream_maxlen")]
    stream_maxlen: Spanned<u64>,
    #[serde(default = "default_degraded")]
    degraded_max_ttl_seconds: Spanned<f64>,
    #[serde(default = "default_timeout_ms")]
    redis_timeout_ms: Spanned<u64>,
    #[serde(default = "no")]
    shared_cache: Spanned<bool>,
    cluster_key: Option<Spanned<String>>,
    cluster_key_file: Option<Spanned<String>>,
    #[serde(default = "default_shared_prefix")]
    shared_cache_prefix: Spanned<String>,
    #[serde(default = "yes")]
    fleet_limits: Spanned<bool>,
    #[serde(default = "default_lease")]
    limit_lease: Spanned<u64>,
    #[serde(default = "one")]
    replicas_hint: Spanned<u64>,
    #[serde(default = "default_limits_prefix")]
    limits_prefix: Spanned<String>,
}

fn yes() -> Spanned<bool> {
    Spanned::new(0..0, true)
}
fn default_lease() -> Spanned<u64> {
    Spanned::new(0..0, 10)
}
fn one() -> Spanned<u64> {
    Spanned::new(0..0, 1)
}
fn default_limits_prefix() -> Spanned<String> {
    Spanned::new(0..0, "fapi-gateway:limits:".into())
}

fn default_stream_key() -> Spanned<String> {
    Spanned::new(0..0, "fapi-gateway:revocations".into())
}
fn default_stream_maxlen() -> Spanned<u64> {
    Spanned::new(0..0, 100_000)
}
fn default_degraded() -> Spanned<f64> {
    Spanned::new(0..0, 5.0)
}
fn default_timeout_ms() -> Spanned<u64> {
    Spanned::new(0..0, 50)
}
fn no() -> Spanned<bool> {
    Spanned::new(0..0, false)
}
fn default_shared_prefix() -> Spanned<String> {
    Spanned::new(0..0, "fapi-gateway:introspection:".into())
}

/// The validated `[cluster]`. Its `Debug` shows no password and no key.
#[derive(Clone)]
pub struct ClusterConfig {
    /// `redis://host:port[/db]` or `rediss://…` (TLS).
    pub redis_url: String,
    /// The CA bundle a `rediss://` server's certificate must chain to (the system's
    /// roots when absent).
    pub ca: Option<PathBuf>,
    /// Redis ACL user.
    pub username: Option<String>,
    /// Redis password (from `password_file` or `${ENV}`).
    pub password: Option<String>,
    /// The Stream revocations are appended to.
    pub stream_key: String,
    /// `XADD … MAXLEN ~ N`: about this many revocations are kept.
    pub stream_maxlen: u64,
    /// While the feed cannot be read, no cached result is used longer than this.
    pub degraded_max_ttl: Duration,
    /// Longest any one Redis call may take on the request path (shared cache) before the
    /// local path is taken.
    pub redis_timeout: Duration,
    /// Whether introspection results are shared through Redis.
    pub shared_cache: bool,
    /// The cluster key (at least 32 bytes): HMACs the shared cache's keys and seals its
    /// values. Required with `shared_cache`.
    pub cluster_key: Option<Vec<u8>>,
    /// Prefix of the shared cache's Redis keys.
    pub shared_cache_prefix: String,
    /// Whether rate limits, quotas and the unattended-access limit are counted fleet-wide
    /// in Redis (else each replica counts alone).
    pub fleet_limits: bool,
    /// Units a replica leases from a fleet-wide counter at a time (1: exact, one Redis
    /// call per request).
    pub limit_lease: u64,
    /// The fleet's replica count: while Redis is away each replica counts every limit
    /// divided by it.
    pub replicas_hint: u64,
    /// Prefix of the limits' Redis keys.
    pub limits_prefix: String,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("ca", &self.ca)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("stream_key", &self.stream_key)
            .field("stream_maxlen", &self.stream_maxlen)
            .field("degraded_max_ttl", &self.degraded_max_ttl)
            .field("redis_timeout", &self.redis_timeout)
            .field("shared_cache", &self.shared_cache)
            .field("cluster_key", &self.cluster_key.as_ref().map(|_| "<redacted>"))
            .field("shared_cache_prefix", &self.shared_cache_prefix)
            .field("fleet_limits", &self.fleet_limits)
            .field("limit_lease", &self.limit_lease)
            .field("replicas_hint", &self.replicas_hint)
            .field("limits_prefix", &self.limits_prefix)
            .finish()
    }
}

/// The URL without a password (`redis://user:secret@host` → `redis://user:***@host`).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((auth, host)) => {
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

pub(super) fn validate(c: &ClusterSection, d: &mut Diagnostics) -> Option<ClusterConfig> {
    let errors_before = d.errors.len();
    let url = c.redis_url.get_ref();
    let tls = url.starts_with("rediss://");
    if !(tls || url.starts_with("redis://")) || url.len() <= "rediss://".len() {
        d.error(
            Some(c.redis_url.span()),
            format!("cluster.redis_url `{}` must be redis://HOST:PORT or rediss://HOST:PORT", redact_url(url)),
        );
    } else if url.split_once("://").is_some_and(|(_, rest)| rest.contains('@')) {
        d.error(
            Some(c.redis_url.span()),
            "cluster.redis_url must not carry credentials: give cluster.username and cluster.password_file",
        );
    }
    let ca = c.ca.as_ref().map(|ca| (ca.span(), d.base.join(ca.get_ref())));
    if let Some((span, path)) = &ca {
        if !tls {
            d.error(Some(span.clone()), "cluster.ca is for rediss:// (TLS) URLs only");
        } else if !path.is_file() {
            d.error(Some(span.clone()), format!("cluster.ca file {} cannot be read", path.display()));
        }
    }
    let password_span = c.password.as_ref().or(c.password_file.as_ref()).map(|s| s.span());
    let password = match secrets::resolve(
        c.password.as_ref().map(|s| s.get_ref().as_str()),
        c.password_file.as_ref().map(|f| d.base.join(f.get_ref())).as_deref(),
        "cluster.password",
    ) {
        Ok(p) => p,
        Err(m) => {
            d.error(password_span, m);
            None
        }
    };
    if c.username.is_some() && password.is_none() {
        d.error(c.username.as_ref().map(|u| u.span()), "cluster.username needs cluster.password or password_file");
    }
    let stream_key = c.stream_key.get_ref();
    if stream_key.is_empty() || stream_key.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        d.error(Some(c.stream_key.span()), "cluster.stream_key must be a non-empty name without spaces");
    }
    if *c.stream_maxlen.get_ref() == 0 {
        d.error(Some(c.stream_maxlen.span()), "cluster.stream_maxlen must be above 0");
    }
    let degraded = *c.degraded_max_ttl_seconds.get_ref();
    if !(degraded.is_finite() && degraded > 0.0 && degraded <= 3600.0) {
        d.error(
            Some(c.degraded_max_ttl_seconds.span()),
            "cluster.degraded_max_ttl_seconds must be above 0 and at most 3600",
        );
    }
    let timeout = *c.redis_timeout_ms.get_ref();
    if !(1..=10_000).contains(&timeout) {
        d.error(Some(c.redis_timeout_ms.span()), "cluster.redis_timeout_ms must be between 1 and 10000");
    }
    let key_span = c.cluster_key.as_ref().or(c.cluster_key_file.as_ref()).map(|s| s.span());
    let cluster_key = match secrets::resolve(
        c.cluster_key.as_ref().map(|s| s.get_ref().as_str()),
        c.cluster_key_file.as_ref().map(|f| d.base.join(f.get_ref())).as_deref(),
        "cluster.cluster_key",
    ) {
        Ok(Some(k)) if k.len() < 32 => {
            d.error(key_span.clone(), "cluster.cluster_key must be at least 32 bytes (e.g. `openssl rand -hex 32`)");
            None
        }
        Ok(k) => k.map(String::into_bytes),
        Err(m) => {
            d.error(key_span.clone(), m);
            None
        }
    };
    // A key given but unusable is reported above.
    if *c.shared_cache.get_ref() && key_span.is_none() {
        d.error(
            Some(c.shared_cache.span()),
            "cluster.shared_cache needs cluster.cluster_key_file (at least 32 bytes): it seals what Redis holds",
        );
    }
    if !(1..=10_000).contains(c.limit_lease.get_ref()) {
        d.error(Some(c.limit_lease.span()), "cluster.limit_lease must be between 1 and 10000");
    }
    if !(1..=1_000).contains(c.replicas_hint.get_ref()) {
        d.error(Some(c.replicas_hint.span()), "cluster.replicas_hint must be between 1 and 1000");
    }
    let limits_prefix = c.limits_prefix.get_ref();
    if limits_prefix.is_empty() || limits_prefix.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        d.error(Some(c.limits_prefix.span()), "cluster.limits_prefix must be a non-empty name without spaces");
    }
    if d.errors.len() != errors_before {
        return None;
    }
    Some(ClusterConfig {
        redis_url: url.clone(),
        ca: ca.map(|(_, p)| p),
        username: c.username.as_ref().map(|u| u.get_ref().clone()),
        password,
        stream_key: stream_key.clone(),
        stream_maxlen: *c.stream_maxlen.get_ref(),
        degraded_max_ttl: Duration::from_secs_f64(degraded),
        redis_timeout: Duration::from_millis(timeout),
        shared_cache: *c.shared_cache.get_ref(),
        cluster_key,
        shared_cache_prefix: c.shared_cache_prefix.get_ref().clone(),
        fleet_limits: *c.fleet_limits.get_ref(),
        limit_lease: *c.limit_lease.get_ref(),
        replicas_hint: *c.replicas_hint.get_ref(),
        limits_prefix: limits_prefix.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<ClusterConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("key"), "k".repeat(40)).unwrap();
        std::fs::write(dir.path().join("short"), "k".repeat(8)).unwrap();
        let path = dir.path().join("gateway.toml");
        let section: ClusterSection = toml::from_str(text).unwrap();
        let mut d = Diagnostics::new(&path, text);
        match validate(&section, &mut d) {
            Some(c) if d.errors.is_empty() => Ok(c),
            _ => Err(d.errors.iter().map(|e| e.message.clone()).collect()),
        }
    }

    #[test]
    fn defaults_and_mistakes() {
        let c = check("redis_url = \"redis://127.0.0.1:6379\"").unwrap();
        assert_eq!((c.stream_key.as_str(), c.stream_maxlen), ("fapi-gateway:revocations", 100_000));
        assert_eq!(c.degraded_max_ttl, Duration::from_secs(5));
        assert!(!c.shared_cache);
        assert_eq!((c.fleet_limits, c.limit_lease, c.replicas_hint), (true, 10, 1));
        let cases = [
            ("redis_url = \"redis://h:1\"\nlimit_lease = 0", "limit_lease must be between"),
            ("redis_url = \"redis://h:1\"\nreplicas_hint = 0", "replicas_hint must be between"),
            ("redis_url = \"http://x\"", "must be redis://"),
            ("redis_url = \"redis://u:p@h:1\"", "must not carry credentials"),
            ("redis_url = \"redis://h:1\"\nca = \"key\"", "rediss:// (TLS) URLs only"),
            ("redis_url = \"redis://h:1\"\nshared_cache = true", "needs cluster.cluster_key_file"),
            ("redis_url = \"redis://h:1\"\nshared_cache = true\ncluster_key_file = \"short\"", "at least 32 bytes"),
            ("redis_url = \"redis://h:1\"\nstream_maxlen = 0", "stream_maxlen must be above 0"),
            ("redis_url = \"redis://h:1\"\ndegraded_max_ttl_seconds = 0", "degraded_max_ttl_seconds"),
            ("redis_url = \"redis://h:1\"\nusername = \"gw\"", "needs cluster.password"),
        ];
        for (text, expected) in cases {
            let errors = check(text).unwrap_err();
            assert!(errors.iter().any(|e| e.contains(expected)), "{text}: {errors:?}");
        }
        let shared = check("redis_url = \"redis://h:1\"\nshared_cache = true\ncluster_key_file = \"key\"").unwrap();
        assert_eq!(shared.cluster_key.as_deref().map(<[u8]>::len), Some(40));
        assert!(!format!("{shared:?}").contains("kkkk"), "the key reached Debug");
    }
}
