//! The bounded introspection cache in front of the authorization server (a small sharded
//! store of its own: a general-purpose cache's per-entry bookkeeping cost more memory
//! than the cached token itself).
//!
//! Keys are SHA-256 digests of the server's name and the token, so raw tokens are never
//! stored and the same token string at two servers is two entries. An active result lives
//! until the token's `exp` or the configured maximum, whichever is sooner; an inactive one
//! briefly (so a flood of junk tokens does not become a flood of calls). Errors are never
//! cached. Concurrent misses for one token wait on a single introspection call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::VecDeque;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::introspection::{IntrospectionError, Introspector, TokenInfo};
use crate::metrics::Metrics;
use crate::policy::ClaimPath;
use index::ConsentIndex;

/// The cache's bounds.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Longest an active result is kept (never past the token's `exp`).
    pub max_ttl: Duration,
    /// How long an inactive result is kept.
    pub inactive_ttl: Duration,
    /// Most entries kept.
    pub capacity: u64,
}

/// A token's identity in the cache: SHA-256 over the server's name and the token,
/// truncated to 128 bits (finding another token with the same key takes about 2^128
/// tries; two keys of one's own colliding, about 2^64, gains nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 16]);

impl TokenKey {
    /// The key of `token` at the authorization server named `server`.
    pub fn new(server: &str, token: &str) -> TokenKey {
        let mut h = Sha256::new();
        h.update(server.as_bytes());
        h.update([0u8]);
        h.update(token.as_bytes());
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        TokenKey(key)
    }

    /// The key's 16 bytes, to carry it between replicas.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The key from its 16 bytes (as [`TokenKey::to_bytes`] gave them).
    pub fn from_bytes(bytes: [u8; 16]) -> TokenKey {
        TokenKey(bytes)
    }

    /// A short, non-reversible tag to correlate log lines about one token.
    pub fn short(&self) -> String {
        // Without formatting machinery: this runs on every authorized request.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(12);
        for b in &self.0[..6] {
            text.push(HEX[usize::from(b >> 4)] as char);
            text.push(HEX[usize::from(b & 15)] as char);
        }
        text
    }
}

/// How a lookup was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// From the cache, no call.
    Hit,
    /// This lookup made the introspection call.
    Miss,
    /// Another lookup's call for the same token was awaited.
    Coalesced,
}

impl CacheOutcome {
    /// The outcome's `result` label in `fapi_gateway_cache_lookups_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Coalesced => "coalesced",
        }
    }
}

/// An introspection result and when it was fetched.
#[derive(Debug)]
pub struct Cached {
    /// The introspection response, as the policy reads it.
    pub info: TokenInfo,
    /// When it was fetched: milliseconds since the cache's own epoch (8 bytes, not 16).
    fetched_ms: u64,
    /// Tells this entry from a later one under the same key (for the consent index).
    generation: u64,
    /// The grant JWTs signed for this token, which go when the entry goes.
    pub grant_jwts: crate::grant_jwt::JwtSlot,
}

struct Lifetime {
    max_ttl: Duration,
    inactive_ttl: Duration,
}

impl Lifetime {
    fn of(&self, info: &TokenInfo) -> Duration {
        if !info.active {
            return self.inactive_ttl;
        }
        match info.exp {
            Some(exp) => {
                let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
                Duration::from_secs(exp.get()).saturating_sub(now).min(self.max_ttl)
            }
            None => self.max_ttl,
        }
    }
}

/// Shards of the store, so concurrent requests rarely wait on one lock.
const SHARDS: usize = 16;

struct Slot {
    value: Arc<Cached>,
    /// Milliseconds since the cache's epoch.
    expires_ms: u64,
}

/// One shard: the entries, and their keys in insertion order (for eviction of the oldest
/// and for sweeping expired ones). A queued key whose entry has been replaced or removed
/// is recognised by its generation and skipped.
#[derive(Default)]
struct Shard {
    entries: HashMap<TokenKey, Slot>,
    order: VecDeque<(TokenKey, u64)>,
}

/// The answer of the one introspection call under way for a token, once there is one;
/// concurrent lookups wait on it.
type InFlight = watch::Receiver<Option<Result<Arc<Cached>, IntrospectionError>>>;

/// Removes a token's in-flight call when the call's task ends, however it ends.
struct InFlightGuard {
    cache: Arc<IntrospectionCache>,
    key: TokenKey,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        lock(&self.cache.inflight).remove(&self.key);
    }
}

/// A lock that a panic elsewhere does not make unusable for every later request: the
/// store's maps stay valid between statements, so the data is still good.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Why an entry left the store.
#[derive(Clone, Copy)]
enum Removal {
    Expired,
    Size,
}

/// Introspection results by token, bounded in count and in time. A small sharded store
/// rather than a general-purpose cache: per entry it holds the key, the value and its
/// deadline, which keeps a cached token's memory low (`benches/RESULTS.md`).
pub struct IntrospectionCache {
    server: String,
    /// The cache's epoch, for 8-byte instants.
    epoch: Instant,
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    lifetime: Lifetime,
    /// One in-flight introspection per token: concurrent misses wait on it.
    inflight: Mutex<HashMap<TokenKey, InFlight>>,
    introspector: Arc<dyn Introspector>,
    index: Mutex<ConsentIndex>,
    /// Where the APIs of this server read a consent id (set at start and on reload).
    consent_paths: ArcSwap<Vec<ClaimPath>>,
    generations: AtomicU64,
    metrics: Arc<Metrics>,
    /// The fleet's hooks and the degraded-mode cap ([`fleet`]).
    fleet: fleet::FleetState,
    /// `cache_lookups{result="hit"}`, resolved once: a hit is the hot path.
    hits: prometheus::IntCounter,
}

impl IntrospectionCache {
    /// An empty cache for the authorization server named `server`, holding at most
    /// `config.capacity` results and asking `introspector` (the server's guarded client) on a
    /// miss.
    pub fn new(
        server: &str,
        config: &CacheConfig,
        introspector: Arc<dyn Introspector>,
        metrics: Arc<Metrics>,
    ) -> IntrospectionCache {
        // Never more than `capacity` in all: fewer shards for tiny capacities, floor per shard.
        let capacity = (config.capacity as usize).max(1);
        let shard_count = SHARDS.min(capacity);
        let shard_capacity = capacity / shard_count;
        IntrospectionCache {
            server: server.to_string(),
            epoch: Instant::now(),
            shards: (0..shard_count).map(|_| Mutex::new(Shard::default())).collect(),
            shard_capacity,
            lifetime: Lifetime { max_ttl: config.max_ttl, inactive_ttl: config.inactive_ttl },
            inflight: Mutex::default(),
            introspector,
            index: Mutex::default(),
            consent_paths: ArcSwap::from_pointee(Vec::new()),
            generations: AtomicU64::new(0),
            hits: metrics.cache_lookups.with_label_values(&["hit"]),
            metrics,
            fleet: fleet::FleetState::default(),
        }
    }

    /// The key of `token` at this cache's authorization server.
    pub fn key(&self, token: &str) -> TokenKey {
        TokenKey::new(&self.server, token)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, key: &TokenKey) -> &Mutex<Shard> {
        &self.shards[key.0[0] as usize % self.shards.len()]
    }

    /// Counts a removal and forgets the entry in the consent index.
    fn removed(&self, key: TokenKey, value: &Cached, why: Removal) {
        lock(&self.index).remove(key, Some(value.generation));
        self.count_removal(why);
    }

    fn count_removal(&self, why: Removal) {
        let cause = match why {
            Removal::Expired => "expired",
            Removal::Size => "size",
        };
        self.metrics.cache_evictions.with_label_values(&[cause]).inc();
    }

    fn get(&self, key: &TokenKey) -> Option<Arc<Cached>> {
        let mut shard = lock(self.shard(key));
        let slot = shard.entries.get(key)?;
        let now = self.now_ms();
        if slot.expires_ms > now && self.fleet.within_degraded_cap(slot.value.fetched_ms, now) {
            return Some(slot.value.clone());
        }
        let expired = shard.entries.remove(key).expect("present");
        drop(shard);
        self.removed(*key, &expired.value, Removal::Expired);
        None
    }

    /// Every consent id the APIs of this server can read from `info`.
    fn consents_of(&self, info: &TokenInfo) -> Vec<Box<str>> {
        let mut ids: Vec<Box<str>> = Vec::new();
        if !info.active {
            return ids;
        }
        for path in self.consent_paths.load().iter() {
            if let Some(id) = path.string(&info.claims) {
                if !ids.iter().any(|i| **i == *id) {
                    ids.push(id.into());
                }
            }
        }
        ids
    }

    /// Sets where consent ids are read (every API of this server's mapping). When that
    /// changes, entries indexed under the old paths could escape a revocation: all go.
    pub fn set_consent_paths(&self, mut paths: Vec<ClaimPath>) {
        paths.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        paths.dedup();
        if **self.consent_paths.load() == paths {
            return;
        }
        self.consent_paths.store(Arc::new(paths));
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            dropped += shard.entries.len() as u64;
            shard.entries.clear();
            shard.order.clear();
        }
        lock(&self.index).clear();
        self.metrics.cache_evictions.with_label_values(&["reindexed"]).inc_by(dropped);
    }

    /// Stores an introspection result asked for after the `started`th revocation, indexed
    /// under its consents. Returns `false`, storing nothing, if one of them was revoked
    /// since (the answer may predate the revocation).
    fn insert(&self, key: TokenKey, value: Arc<Cached>, started: u64) -> bool {
        let consents = self.consents_of(&value.info);
        // The index lock is held until the entry is in its shard (revocations take it
        // first too): a revocation sees either no entry or an indexed one.
        let mut index = lock(&self.index);
        if index.revoked_since(&consents, started) {
            return false;
        }
        let ttl = self.lifetime.of(&value.info);
        if ttl.is_zero() {
            return true;
        }
        index.insert(&consents, key, value.generation);
        let now = self.now_ms();
        let mut gone = Vec::new();
        {
            let mut shard = lock(self.shard(&key));
            // Expired entries at the front go first; then, if full, the oldest.
            while let Some(&(k, generation)) = shard.order.front() {
                let stale = shard.entries.get(&k).is_none_or(|s| s.value.generation != generation);
                let expired = !stale && shard.entries[&k].expires_ms <= now;
                let full = shard.entries.len() >= self.shard_capacity && !shard.entries.contains_key(&key);
                if !(stale || expired || full) {
                    break;
                }
                shard.order.pop_front();
                if !stale {
                    let slot = shard.entries.remove(&k).expect("present");
                    gone.push((k, slot.value, if expired { Removal::Expired } else { Removal::Size }));
                }
            }
            shard.order.push_back((key, value.generation));
            shard.entries.insert(key, Slot { value, expires_ms: now + ttl.as_millis() as u64 });
        }
        for (k, v, _) in &gone {
            index.remove(*k, Some(v.generation));
        }
        drop(index);
        for (_, _, why) in gone {
            self.count_removal(why);
        }
        true
    }

    /// The token's introspection result, from the cache or from the server. An entry
    /// older than `max_age` (a route's own, shorter limit) is fetched again. A miss makes
    /// one call in a task of its own, which every concurrent lookup of the token awaits:
    /// a caller that goes away (a client hanging up) cancels nobody's answer.
    pub async fn lookup(
        self: &Arc<Self>,
        key: TokenKey,
        token: &str,
        max_age: Option<Duration>,
    ) -> Result<(Arc<Cached>, CacheOutcome), IntrospectionError> {
        if let Some(found) = self.get(&key) {
            if max_age.is_none_or(|m| self.now_ms().saturating_sub(found.fetched_ms) <= m.as_millis() as u64) {
                self.hits.inc();
                return Ok((found, CacheOutcome::Hit));
            }
            self.remove(&key);
            self.metrics.cache_evictions.with_label_values(&["stale"]).inc();
        }
        let (mut answer, outcome) = {
            let mut inflight = lock(&self.inflight);
            match inflight.get(&key) {
                Some(waiting) => (waiting.clone(), CacheOutcome::Coalesced),
                None => {
                    let (tell, answer) = watch::channel(None);
                    inflight.insert(key, answer.clone());
                    let cache = self.clone();
                    let token = token.to_string();
                    tokio::spawn(async move {
                        // Removed before the answer is told: later lookups find the store
                        // (or, after an error, call again).
                        let done = InFlightGuard { cache: cache.clone(), key };
                        let result = cache.fetch_and_store(key, &token).await;
                        drop(done);
                        let _ = tell.send(Some(result));
                    });
                    (answer, CacheOutcome::Miss)
                }
            }
        };
        let result = match answer.wait_for(Option::is_some).await {
            Ok(told) => told.clone().expect("waited for an answer"),
            Err(_) => Err(IntrospectionError::Unreachable("the introspection call ended without an answer".into())),
        };
        self.metrics.cache_lookups.with_label_values(&[outcome.as_str()]).inc();
        result.map(|v| (v, outcome))
    }

    /// One introspection call, stored if it may be.
    async fn fetch_and_store(&self, key: TokenKey, token: &str) -> Result<Arc<Cached>, IntrospectionError> {
        let started = lock(&self.index).revocations;
        let result = self.fetch(token).await;
        match &result {
            Ok(value) if !self.insert(key, value.clone(), started) => {
                // Its consent was revoked while the call was under way: the answer may
                // predate that, so ask again (and store that answer).
                let started = lock(&self.index).revocations;
                let again = self.fetch(token).await;
                if let Ok(value) = &again {
                    self.insert(key, value.clone(), started);
                }
                again
            }
            _ => result,
        }
    }

    async fn fetch(&self, token: &str) -> Result<Arc<Cached>, IntrospectionError> {
        let started = Instant::now();
        let result = self.introspector.introspect(token).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => {
                self.metrics.introspection_errors.with_label_values(&[&self.server, e.kind()]).inc();
                e.kind()
            }
        };
        if !matches!(result, Err(IntrospectionError::CircuitOpen)) {
            self.metrics
                .introspection_duration
                .with_label_values(&[&self.server, outcome])
                .observe(started.elapsed().as_secs_f64());
        }
        let info = result?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        Ok(Arc::new(Cached { info, fetched_ms: self.now_ms(), generation, grant_jwts: Default::default() }))
    }

    fn remove(&self, key: &TokenKey) -> Option<Arc<Cached>> {
        let slot = lock(self.shard(key)).entries.remove(key)?;
        lock(&self.index).remove(*key, Some(slot.value.generation));
        Some(slot.value)
    }

    /// Drops every entry of a consent at once; returns how many there were.
    pub async fn revoke_consent(&self, consent: &str) -> usize {
        let evicted = self.take_consent(consent);
        self.metrics.cache_evictions.with_label_values(&["revoked"]).inc_by(evicted as u64);
        evicted
    }

    /// Drops every entry of a consent and remembers the revocation (see `revoke_consent`),
    /// counting nothing; returns how many entries went.
    fn take_consent(&self, consent: &str) -> usize {
        let remember_ms = self.lifetime.max_ttl.max(self.lifetime.inactive_ttl).as_millis() as u64;
        let mut index = lock(&self.index);
        let keys = index.take(consent, self.now_ms(), remember_ms);
        for k in &keys {
            lock(self.shard(k)).entries.remove(k);
        }
        drop(index);
        keys.len()
    }

    /// Drops the entry of one token; returns whether there was one.
    pub async fn revoke_token(&self, token: &str) -> bool {
        let found = self.remove(&self.key(token)).is_some();
        if found {
            self.metrics.cache_evictions.with_label_values(&["revoked"]).inc();
        }
        found
    }

    /// Entries currently held (expired ones included until swept).
    pub fn entry_count(&self) -> u64 {
        self.shards.iter().map(|s| lock(s).entries.len() as u64).sum()
    }

    /// Sweeps expired entries now (before a metrics scrape, so counts are exact).
    pub async fn run_pending_tasks(&self) {
        let now = self.now_ms();
        for shard in self.shards.iter() {
            let mut gone = Vec::new();
            {
                let mut shard = lock(shard);
                shard.entries.retain(|k, slot| {
                    let keep = slot.expires_ms > now;
                    if !keep {
                        gone.push((*k, slot.value.clone()));
                    }
                    keep
                });
                let Shard { entries, order } = &mut *shard;
                order.retain(|(k, generation)| entries.get(k).is_some_and(|s| s.value.generation == *generation));
            }
            for (k, v) in gone {
                self.removed(k, &v, Removal::Expired);
            }
        }
    }
}

/// The gateway's path to one authorization server: its cache (which calls the guarded
/// introspection client) and the breaker that guards it.
pub struct ServerLink {
    /// The server's name, as the configuration and policies' `authorization_server` give it.
    pub name: String,
    /// Introspection results of the server's tokens, in front of its guarded client.
    pub cache: Arc<IntrospectionCache>,
    /// The circuit breaker of the server's introspection calls (readiness reports it when
    /// open).
    pub breaker: Arc<crate::resilience::CircuitBreaker>,
    /// `Retry-After` of the 503 answered while the server cannot introspect a token.
    pub retry_after_seconds: u64,
}

/// Every authorization server the gateway was started with, by name.
pub type ServerLinks = HashMap<String, ServerLink>;

/// Tells each server's cache where the APIs that take its tokens read a consent id (at
/// start and on every reload, before the policies go live).
pub fn set_consent_paths(links: &ServerLinks, policies: &crate::policy::PolicySet) {
    for (name, link) in links {
        let paths = policies
            .apis()
            .iter()
            .filter(|a| a.authorization_server == *name)
            .map(|a| a.claims.consent_id.clone())
            .collect();
        link.cache.set_consent_paths(paths);
    }
}

mod fleet;
mod index;

pub use fleet::RevocationListener;

#[cfg(test)]
mod tests;

/// Revocation by subject (CAEP `session-revoked`, `credential-change`).
impl IntrospectionCache {
    /// Drops every entry whose introspected `sub` is `subject`; returns how many there were.
    ///
    /// A scan of the store, shard by shard (no index: subjects are revoked rarely, and an
    /// index would cost every cached token memory), linear in the entries held; each shard
    /// is locked only while it is scanned. An
    /// introspection already under way when the revocation arrives is not held back (the
    /// consent index does that for consents): its answer predates the revocation by at
    /// most one call, and the authorization server answers for the revoked session from
    /// then on.
    pub async fn revoke_subject(&self, subject: &str) -> usize {
        let mut gone = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            shard.entries.retain(|k, slot| {
                let matches = slot.value.info.subject.as_deref() == Some(subject);
                if matches {
                    gone.push((*k, slot.value.generation));
                }
                !matches
            });
        }
        if !gone.is_empty() {
            let mut index = lock(&self.index);
            for (k, generation) in &gone {
                index.remove(*k, Some(*generation));
            }
        }
        self.metrics.cache_evictions.with_label_values(&["revoked"]).inc_by(gone.len() as u64);
        gone.len()
    }
}
