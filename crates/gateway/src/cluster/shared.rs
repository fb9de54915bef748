//! The optional shared introspection cache (`cluster.shared_cache = true`): a replica that
//! misses locally reads Redis before asking the authorization server, and writes what
//! the server answered, so a fleet behind a round-robin balancer introspects a token
//! about once per lifetime instead of once per replica.
//!
//! A value in Redis is a decision input, and whoever can write to Redis must not be able
//! to forge an active token: the Redis key is HMAC-SHA256 under the cluster key of the
//! server's name and the token (never the token), and the value is sealed with
//! AES-256-GCM under a key derived from the cluster key, the Redis key bound in as
//! associated data and the server's name, the fetch time and the expiry inside. A value
//! that does not open, has expired, is another server's, or was fetched before a
//! revocation this replica knows of (of its token, subject or consent) is a miss, and
//! counted (`fapi_gateway_cluster_shared_cache_total{result="rejected"}`).
//!
//! Redis is never waited on longer than `cluster.redis_timeout_ms` per call; slow or down,
//! the local path (the authorization server) answers. While the revocation feed cannot be
//! read, nothing is read from the shared cache (a value's revocations may be unknown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{json, Value};

use fapi_enforcement::cache::{CacheConfig, TokenKey};
use fapi_enforcement::introspection::claims::Claim;
use fapi_enforcement::introspection::{IntrospectionError, Introspector, TokenInfo};

use super::connection::RedisLink;
use super::ClusterMetrics;

/// A value fetched up to this long after this replica learnt of a revocation is still
/// taken as older than it (replicas' clocks differ by less, NTP-synchronised).
pub const CLOCK_SKEW: Duration = Duration::from_secs(1);

/// Sealed-value format version.
const VERSION: u8 = 1;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Revocations this replica learnt of lately (wall-clock ms when it did), so shared
/// values fetched before them are not believed.
#[derive(Default)]
pub struct RevokedLately {
    consents: Mutex<HashMap<String, u64>>,
    subjects: Mutex<HashMap<String, u64>>,
    tokens: Mutex<HashMap<TokenKey, u64>>,
}

fn note<K: std::hash::Hash + Eq>(map: &Mutex<HashMap<K, u64>>, key: K, window: Duration) {
    let now = now_ms();
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > 100_000 {
        map.retain(|_, at| now.saturating_sub(*at) < window.as_millis() as u64);
    }
    map.insert(key, now);
}

fn newer_than<K: std::hash::Hash + Eq + ?Sized, Q>(map: &Mutex<HashMap<Q, u64>>, key: &K, fetched_ms: u64) -> bool
where
    Q: std::borrow::Borrow<K> + std::hash::Hash + Eq,
{
    let map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.get(key).is_some_and(|at| fetched_ms <= at + CLOCK_SKEW.as_millis() as u64)
}

impl RevokedLately {
    /// Notes a revocation learnt now; remembered for about `window`.
    pub fn note(&self, revoked: &fapi_enforcement::revocation::Revoked, window: Duration) {
        use fapi_enforcement::revocation::Revoked;
        match revoked {
            Revoked::Consent(c) => note(&self.consents, c.clone(), window),
            Revoked::Subject(s) => note(&self.subjects, s.clone(), window),
            Revoked::Token(k) => note(&self.tokens, *k, window),
        }
    }

    /// Whether a value for `key` with `info`, fetched at `fetched_ms`, may predate a
    /// revocation known here. Consent ids are looked for among every string of the
    /// extension claims (where the APIs read them is a policy matter): a match only
    /// costs a call.
    fn predates_a_revocation(&self, key: TokenKey, info: &TokenInfo, fetched_ms: u64) -> bool {
        if newer_than(&self.tokens, &key, fetched_ms) {
            return true;
        }
        if info.subject.as_deref().is_some_and(|s| newer_than(&self.subjects, s, fetched_ms)) {
            return true;
        }
        let consents = self.consents.lock().unwrap_or_else(|p| p.into_inner());
        if consents.is_empty() {
            return false;
        }
        let mut found = false;
        strings(&info.claims, 0, &mut |s| {
            found |= consents.get(s).is_some_and(|at| fetched_ms <= at + CLOCK_SKEW.as_millis() as u64);
        });
        found
    }
}

/// Every string in `claim`, a few levels deep.
fn strings(claim: &Claim, depth: usize, f: &mut dyn FnMut(&str)) {
    if depth > 6 {
        return;
    }
    match claim {
        Claim::String(s) => f(s),
        Claim::Array(items) => items.iter().for_each(|i| strings(i, depth + 1, f)),
        Claim::Object(members) => members.iter().for_each(|(_, v)| strings(v, depth + 1, f)),
        _ => {}
    }
}

/// The shared cache's keys, connection and bookkeeping.
pub struct SharedCache {
    mac: hmac::Key,
    seal: LessSafeKey,
    rng: SystemRandom,
    prefix: String,
    timeout: Duration,
    max_ttl: Duration,
    inactive_ttl: Duration,
    link: RedisLink,
    /// Set while the revocation feed cannot be read: nothing is read from Redis then.
    pub(crate) feed_down: AtomicBool,
    pub(crate) revoked: Arc<RevokedLately>,
    metrics: Arc<ClusterMetrics>,
}

/// A subkey of the cluster key for one purpose.
fn derive(cluster_key: &[u8], purpose: &str) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, cluster_key), purpose.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// The Redis key of `token` at `server` under `cluster_key`: `prefix` and the hex
/// HMAC-SHA256 of the server's name, a zero byte and the token.
pub fn redis_key(cluster_key: &[u8], prefix: &str, server: &str, token: &str) -> String {
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &derive(cluster_key, "fapi-gateway shared-cache key"));
    key_with(&mac, prefix, server, token)
}

fn key_with(mac: &hmac::Key, prefix: &str, server: &str, token: &str) -> String {
    let mut ctx = hmac::Context::with_key(mac);
    ctx.update(server.as_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{hex}")
}

/// What a sealed value holds.
#[derive(Debug)]
pub struct Opened {
    /// The introspection answer.
    pub info: TokenInfo,
    /// When it was fetched (writer's wall clock, ms).
    pub fetched_ms: u64,
}

/// Why a value in Redis was not used.
#[derive(Debug, PartialEq, Eq)]
pub enum Rejected {
    /// It does not open under the cluster key and this Redis key (forged, altered, moved).
    Unsealed,
    /// It opened, but is for another authorization server.
    OtherServer,
    /// Past its expiry.
    Expired,
    /// Not the shape sealed values have.
    Malformed,
}

impl SharedCache {
    /// The shared cache of `[cluster]` with `cluster_key`, for results living as `cache` says.
    pub fn new(
        cluster_key: &[u8],
        prefix: &str,
        timeout: Duration,
        cache: &CacheConfig,
        revoked: Arc<RevokedLately>,
        metrics: Arc<ClusterMetrics>,
    ) -> SharedCache {
        let seal = UnboundKey::new(&AES_256_GCM, &derive(cluster_key, "fapi-gateway shared-cache seal"))
            .expect("a 32-byte AES-256 key");
        SharedCache {
            mac: hmac::Key::new(hmac::HMAC_SHA256, &derive(cluster_key, "fapi-gateway shared-cache key")),
            seal: LessSafeKey::new(seal),
            rng: SystemRandom::new(),
            prefix: prefix.to_string(),
            timeout,
            max_ttl: cache.max_ttl,
            inactive_ttl: cache.inactive_ttl,
            link: RedisLink::new(timeout),
            feed_down: AtomicBool::new(false),
            revoked,
            metrics,
        }
    }

    /// The Redis key of `token` at `server`.
    pub fn key(&self, server: &str, token: &str) -> String {
        key_with(&self.mac, &self.prefix, server, token)
    }

    /// `info` sealed for `server` under Redis key `key`, valid until `expires_ms`.
    pub fn seal(&self, key: &str, server: &str, info: &TokenInfo, fetched_ms: u64, expires_ms: u64) -> Vec<u8> {
        let mut body = serde_json::to_vec(&json!({
            "s": server, "f": fetched_ms, "e": expires_ms, "r": info.to_response(),
        }))
        .expect("JSON");
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system randomness");
        self.seal
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut body)
            .expect("sealing cannot fail for small values");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + body.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Opens a value read under Redis key `key` for `server`, at wall-clock `now_ms`.
    pub fn open(&self, key: &str, server: &str, sealed: &[u8], now_ms: u64) -> Result<Opened, Rejected> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(Rejected::Unsealed);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| Rejected::Unsealed)?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain =
            self.seal.open_in_place(nonce, Aad::from(key.as_bytes()), &mut body).map_err(|_| Rejected::Unsealed)?;
        let v: Value = serde_json::from_slice(plain).map_err(|_| Rejected::Malformed)?;
        if v["s"].as_str() != Some(server) {
            return Err(Rejected::OtherServer);
        }
        let (Some(fetched_ms), Some(expires_ms)) = (v["f"].as_u64(), v["e"].as_u64()) else {
            return Err(Rejected::Malformed);
        };
        if expires_ms <= now_ms {
            return Err(Rejected::Expired);
        }
        let info = TokenInfo::from_response(v["r"].clone()).map_err(|_| Rejected::Malformed)?;
        Ok(Opened { info, fetched_ms })
    }

    /// How long `info` may be shared from now (as the local cache would keep it).
    fn lifetime(&self, info: &TokenInfo) -> Duration {
        if !info.active {
            return self.inactive_ttl;
        }
        match info.exp {
            Some(exp) => {
                let now = Duration::from_millis(now_ms());
                Duration::from_secs(exp.get()).saturating_sub(now).min(self.max_ttl)
            }
            None => self.max_ttl,
        }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.link.get()
    }

    fn broken(&self) {
        self.link.broken();
        self.metrics.shared_cache.with_label_values(&["error"]).inc();
    }

    /// Keeps this part's Redis connection open until `shutdown` (see `RedisLink`).
    pub(crate) async fn keep_connected(
        self: Arc<Self>,
        client: redis::Client,
        shutdown: pingora_core::server::ShutdownWatch,
    ) {
        self.link.keep_connected(client, shutdown).await
    }

    /// The shared answer for `token` at `server`, if there is one to believe.
    async fn load(&self, server: &str, token: &str, key: &str) -> Option<TokenInfo> {
        if self.feed_down.load(Ordering::Relaxed) {
            return None;
        }
        let mut conn = self.connection()?;
        let mut get = redis::cmd("GET");
        get.arg(key);
        let read = tokio::time::timeout(self.timeout, get.query_async::<Option<Vec<u8>>>(&mut conn));
        let sealed = match read.await {
            Ok(Ok(v)) => v,
            _ => {
                self.broken();
                return None;
            }
        };
        let Some(sealed) = sealed else {
            self.metrics.shared_cache.with_label_values(&["miss"]).inc();
            return None;
        };
        match self.open(key, server, &sealed, now_ms()) {
            Ok(opened)
                if self.revoked.predates_a_revocation(
                    TokenKey::new(server, token),
                    &opened.info,
                    opened.fetched_ms,
                ) =>
            {
                self.metrics.shared_cache.with_label_values(&["rejected"]).inc();
                None
            }
            Ok(opened) => {
                self.metrics.shared_cache.with_label_values(&["hit"]).inc();
                Some(opened.info)
            }
            Err(why) => {
                tracing::warn!(reason = ?why, "fleet: a shared cache value was not used");
                self.metrics.shared_cache.with_label_values(&["rejected"]).inc();
                None
            }
        }
    }

    async fn store(&self, server: &str, key: &str, info: &TokenInfo, fetched_ms: u64) {
        let ttl = self.lifetime(info);
        if ttl.is_zero() {
            return;
        }
        let Some(mut conn) = self.connection() else { return };
        let sealed = self.seal(key, server, info, fetched_ms, fetched_ms + ttl.as_millis() as u64);
        let mut set = redis::cmd("SET");
        set.arg(key).arg(sealed).arg("PX").arg(ttl.as_millis() as u64);
        let write = set.query_async::<()>(&mut conn);
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => self.metrics.shared_cache.with_label_values(&["stored"]).inc(),
            _ => self.broken(),
        }
    }
}

/// A server's guarded client behind the shared cache.
pub struct SharedIntrospector {
    pub(crate) inner: Arc<dyn Introspector>,
    pub(crate) server: String,
    pub(crate) shared: Arc<SharedCache>,
}

#[async_trait]
impl Introspector for SharedIntrospector {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError> {
        let key = self.shared.key(&self.server, token);
        if let Some(info) = self.shared.load(&self.server, token, &key).await {
            return Ok(info);
        }
        let fetched_ms = now_ms();
        let info = self.inner.introspect(token).await?;
        self.shared.store(&self.server, &key, &info, fetched_ms).await;
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fapi_enforcement::revocation::Revoked;

    fn shared(key: &[u8]) -> SharedCache {
        let cache =
            CacheConfig { max_ttl: Duration::from_secs(30), inactive_ttl: Duration::from_secs(5), capacity: 10 };
        SharedCache::new(key, "p:", Duration::from_millis(50), &cache, Arc::default(), Arc::new(ClusterMetrics::new()))
    }

    fn info() -> TokenInfo {
        TokenInfo::from_response(json!({"active": true, "sub": "alice", "consent": {"id": "c-1"}})).unwrap()
    }

    #[test]
    fn sealed_values_open_only_for_their_key_server_and_time() {
        let s = shared(&[7u8; 32]);
        let key = s.key("default", "tok");
        assert_eq!(key, redis_key(&[7u8; 32], "p:", "default", "tok"));
        assert!(!key.contains("tok") && key.len() == 2 + 64);
        let now = now_ms();
        let sealed = s.seal(&key, "default", &info(), now, now + 1_000);
        assert_eq!(s.open(&key, "default", &sealed, now).unwrap().info.subject.as_deref(), Some("alice"));
        // Another server's value (even under its own key) is not this server's answer.
        let theirs = s.key("other", "tok");
        let sealed_other = s.seal(&theirs, "other", &info(), now, now + 1_000);
        assert_eq!(s.open(&key, "default", &sealed_other, now).unwrap_err(), Rejected::Unsealed);
        let moved = s.seal(&key, "other", &info(), now, now + 1_000);
        assert_eq!(s.open(&key, "default", &moved, now).unwrap_err(), Rejected::OtherServer);
        // Moved to another token's key, altered, forged, expired.
        assert_eq!(s.open(&s.key("default", "t2"), "default", &sealed, now).unwrap_err(), Rejected::Unsealed);
        let mut altered = sealed.clone();
        let last = altered.len() - 20;
        altered[last] ^= 1;
        assert_eq!(s.open(&key, "default", &altered, now).unwrap_err(), Rejected::Unsealed);
        let forged = shared(&[8u8; 32]).seal(&key, "default", &info(), now, now + 1_000);
        assert_eq!(s.open(&key, "default", &forged, now).unwrap_err(), Rejected::Unsealed);
        assert_eq!(s.open(&key, "default", b"{\"active\":true}", now).unwrap_err(), Rejected::Unsealed);
        assert_eq!(s.open(&key, "default", &sealed, now + 1_000).unwrap_err(), Rejected::Expired);
    }

    #[test]
    fn values_fetched_before_a_known_revocation_are_not_believed() {
        let r = RevokedLately::default();
        let key = TokenKey::new("default", "tok");
        let before = now_ms() - 5_000;
        assert!(!r.predates_a_revocation(key, &info(), before));
        r.note(&Revoked::Consent("c-1".into()), Duration::from_secs(60));
        assert!(r.predates_a_revocation(key, &info(), before));
        assert!(!r.predates_a_revocation(key, &info(), now_ms() + 5_000), "fetched after the revocation");
        let r = RevokedLately::default();
        r.note(&Revoked::Subject("alice".into()), Duration::from_secs(60));
        assert!(r.predates_a_revocation(key, &info(), before));
        let r = RevokedLately::default();
        r.note(&Revoked::Token(key), Duration::from_secs(60));
        assert!(r.predates_a_revocation(key, &info(), before));
        assert!(!r.predates_a_revocation(TokenKey::new("default", "other"), &info(), before));
    }
}
