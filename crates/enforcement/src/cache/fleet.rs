//! What a fleet of gateways needs of each cache: evicting by key (a revocation from
//! another replica carries the token's key, never the token), dropping everything (a gap
//! in the revocation feed), a cap on every entry's lifetime while the feed is down, and a
//! listener told when an introspection finds a consent no longer granting access.
//!
//! The library knows nothing of how revocations travel: the gateway wires the listener
//! to its feed and sets the degraded cap from its feed's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::{lock, IntrospectionCache, TokenKey};
use crate::revocation::{Revocation, Revoked};

/// Told of revocations a cache found by itself (an introspection answering that a
/// consent's status no longer grants access), so they reach the other replicas.
pub type RevocationListener = Arc<dyn Fn(Revocation) + Send + Sync>;

/// No degraded cap in force.
const NOT_DEGRADED: u64 = u64::MAX;

/// The fleet's state in one cache.
pub(super) struct FleetState {
    /// Since when (the cache's clock, ms) the degraded cap applies; `NOT_DEGRADED` if not.
    degraded_since_ms: AtomicU64,
    /// The cap, in ms.
    degraded_cap_ms: AtomicU64,
    listener: OnceLock<RevocationListener>,
}

impl Default for FleetState {
    fn default() -> Self {
        FleetState {
            degraded_since_ms: AtomicU64::new(NOT_DEGRADED),
            degraded_cap_ms: AtomicU64::new(0),
            listener: OnceLock::new(),
        }
    }
}

impl FleetState {
    /// Whether an entry fetched at `fetched_ms` may still be used at `now_ms`: always
    /// outside degraded mode; within the cap of the later of its fetch and the outage's
    /// start in it (older entries get the cap from the moment the outage was detected).
    pub(super) fn within_degraded_cap(&self, fetched_ms: u64, now_ms: u64) -> bool {
        let since = self.degraded_since_ms.load(Ordering::Relaxed);
        if since == NOT_DEGRADED {
            return true;
        }
        let cap = self.degraded_cap_ms.load(Ordering::Relaxed);
        now_ms < fetched_ms.max(since).saturating_add(cap)
    }
}

impl IntrospectionCache {
    /// The authorization server's name this cache is for.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Drops the entry under `key` (a token revoked at another replica, which sends its
    /// key, not the token); returns whether there was one.
    pub fn revoke_key(&self, key: TokenKey) -> bool {
        let found = self.remove(&key).is_some();
        if found {
            self.metrics.cache_evictions.with_label_values(&["revoked"]).inc();
        }
        found
    }

    /// Drops every entry (the fleet's revocation feed lost entries this replica never
    /// read: any of them may be revoked). Returns how many there were.
    pub fn flush(&self) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut shard = lock(shard);
            dropped += shard.entries.len();
            shard.entries.clear();
            shard.order.clear();
        }
        lock(&self.index).clear();
        self.metrics.cache_evictions.with_label_values(&["flushed"]).inc_by(dropped as u64);
        dropped
    }

    /// Caps every entry's lifetime at `cap` (counted from its fetch, or from now for
    /// entries already held) while `Some`; lifts the cap with `None`. The gateway sets
    /// it while it cannot read the fleet's revocation feed.
    pub fn set_degraded(&self, cap: Option<Duration>) {
        match cap {
            Some(cap) => {
                self.fleet.degraded_cap_ms.store(cap.as_millis() as u64, Ordering::Relaxed);
                let now = self.now_ms().min(NOT_DEGRADED - 1);
                // Only the first call of an outage sets its start.
                let _ = self.fleet.degraded_since_ms.compare_exchange(
                    NOT_DEGRADED,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            None => self.fleet.degraded_since_ms.store(NOT_DEGRADED, Ordering::Relaxed),
        }
    }

    /// Whether the degraded cap is in force.
    pub fn is_degraded(&self) -> bool {
        self.fleet.degraded_since_ms.load(Ordering::Relaxed) != NOT_DEGRADED
    }

    /// Sets who hears of revocations this cache finds by itself (once; later calls are
    /// ignored).
    pub fn set_revocation_listener(&self, listener: RevocationListener) {
        let _ = self.fleet.listener.set(listener);
    }

    /// An introspection just answered that `consent` no longer grants access: the other
    /// tokens of the consent cached here go, the entry under `keep` (the token that was
    /// just refused for it) stays so its next request is refused from the cache, and the
    /// listener hears of it. Returns how many entries went.
    pub async fn consent_found_not_granting(&self, consent: &str, keep: TokenKey) -> usize {
        let kept = lock(self.shard(&keep))
            .entries
            .get(&keep)
            .map(|s| super::Slot { value: s.value.clone(), expires_ms: s.expires_ms });
        let mut evicted_others = self.take_consent(consent);
        if let Some(slot) = kept {
            // Back in, unindexed: it is refused anyway, and it no longer counts as a
            // token of a live consent.
            let mut shard = lock(self.shard(&keep));
            if !shard.entries.contains_key(&keep) {
                shard.order.push_back((keep, slot.value.generation));
                shard.entries.insert(keep, slot);
                evicted_others = evicted_others.saturating_sub(1);
            }
        }
        // Only the others count as evicted: the refused token's entry stays.
        self.metrics.cache_evictions.with_label_values(&["revoked"]).inc_by(evicted_others as u64);
        if let Some(listener) = self.fleet.listener.get() {
            listener(Revocation { server: Some(self.server.clone()), revoked: Revoked::Consent(consent.to_string()) });
        }
        evicted_others
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheConfig;
    use crate::introspection::{IntrospectionError, Introspector, TokenInfo};
    use crate::metrics::Metrics;

    /// Active tokens whose subject is the token's text before its first `.`.
    struct Active;

    #[async_trait::async_trait]
    impl Introspector for Active {
        async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError> {
            let subject = token.split('.').next().map(Arc::from);
            Ok(TokenInfo { active: true, subject, ..TokenInfo::inactive() })
        }
    }

    fn cache() -> Arc<IntrospectionCache> {
        let config =
            CacheConfig { max_ttl: Duration::from_secs(30), inactive_ttl: Duration::from_secs(1), capacity: 100 };
        Arc::new(IntrospectionCache::new("as", &config, Arc::new(Active), Arc::new(Metrics::new())))
    }

    #[tokio::test]
    async fn the_degraded_cap_ages_old_and_new_entries_alike() {
        let cache = cache();
        let key = cache.key("t1");
        cache.lookup(key, "t1", None).await.unwrap();
        assert!(cache.get(&key).is_some());
        cache.set_degraded(Some(Duration::from_millis(100)));
        assert!(cache.is_degraded());
        // An entry older than the outage still has the cap from the outage's start.
        assert!(cache.get(&key).is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).is_none(), "older entry outlived the degraded cap");
        cache.lookup(key, "t1", None).await.unwrap();
        assert!(cache.get(&key).is_some());
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).is_none(), "entry cached during the outage outlived the cap");
        cache.set_degraded(None);
        assert!(!cache.is_degraded());
        cache.lookup(key, "t1", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(cache.get(&key).is_some(), "the cap outlived the outage");
    }

    #[tokio::test]
    async fn by_key_by_subject_and_everything() {
        let cache = cache();
        for t in ["alice.1", "alice.2", "bob.1", "carol.1"] {
            cache.lookup(cache.key(t), t, None).await.unwrap();
        }
        assert!(cache.revoke_key(cache.key("carol.1")));
        assert!(!cache.revoke_key(cache.key("carol.1")));
        assert_eq!(cache.revoke_subject("alice").await, 2);
        assert_eq!(cache.revoke_subject("alice").await, 0);
        assert!(cache.get(&cache.key("bob.1")).is_some());
        assert_eq!(cache.flush(), 1);
        assert_eq!(cache.entry_count(), 0);
    }
}
