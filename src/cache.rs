//! The bounded introspection cache in front of the authorization server.
//!
//! Keys are SHA-256 digests of the server's name and the token, so raw tokens are never
//! stored and the same token string at two servers is two entries. An active result lives
//! until the token's `exp` or the configured maximum, whichever is sooner; an inactive one
//! briefly (so a flood of junk tokens does not become a flood of calls). Errors are never
//! cached. Concurrent misses for one token wait on a single introspection call.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::future::Cache;
use moka::Expiry;
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::introspection::{IntrospectionError, Introspector, TokenInfo};

/// A token's identity in the cache: SHA-256 over the server's name and the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn new(server: &str, token: &str) -> TokenKey {
        let mut h = Sha256::new();
        h.update(server.as_bytes());
        h.update([0u8]);
        h.update(token.as_bytes());
        TokenKey(h.finalize().into())
    }

    /// A short, non-reversible tag to correlate log lines about one token.
    pub fn short(&self) -> String {
        self.0[..6].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Whether a lookup was answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
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
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                Duration::from_secs(exp)
                    .saturating_sub(now)
                    .min(self.max_ttl)
            }
            None => self.max_ttl,
        }
    }
}

impl Expiry<TokenKey, Arc<TokenInfo>> for Lifetime {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<TokenInfo>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.of(value))
    }
}

/// Introspection results by token, bounded in count and in time.
pub struct IntrospectionCache {
    server: String,
    entries: Cache<TokenKey, Arc<TokenInfo>>,
    introspector: Arc<dyn Introspector>,
}

impl IntrospectionCache {
    pub fn new(
        server: &str,
        config: &CacheConfig,
        introspector: Arc<dyn Introspector>,
    ) -> IntrospectionCache {
        let entries = Cache::builder()
            .max_capacity(config.capacity)
            .expire_after(Lifetime {
                max_ttl: config.max_ttl,
                inactive_ttl: config.inactive_ttl,
            })
            .build();
        IntrospectionCache {
            server: server.to_string(),
            entries,
            introspector,
        }
    }

    pub fn key(&self, token: &str) -> TokenKey {
        TokenKey::new(&self.server, token)
    }

    /// The token's introspection result, from the cache or from the server.
    pub async fn lookup(
        &self,
        key: TokenKey,
        token: &str,
    ) -> Result<(Arc<TokenInfo>, CacheOutcome), IntrospectionError> {
        let entry = self
            .entries
            .entry(key)
            .or_try_insert_with(async { self.introspector.introspect(token).await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())?;
        let outcome = if entry.is_fresh() {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Hit
        };
        Ok((entry.into_value(), outcome))
    }

    /// Entries currently held (approximate until pending maintenance runs).
    pub fn entry_count(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Runs pending evictions now (tests and metrics want exact counts).
    pub async fn run_pending_tasks(&self) {
        self.entries.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Counting {
        calls: AtomicUsize,
        answer: Result<TokenInfo, IntrospectionError>,
    }

    #[async_trait::async_trait]
    impl Introspector for Counting {
        async fn introspect(&self, _token: &str) -> Result<TokenInfo, IntrospectionError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.answer.clone()
        }
    }

    fn active(exp: Option<u64>) -> TokenInfo {
        TokenInfo {
            active: true,
            exp,
            ..TokenInfo::inactive()
        }
    }

    fn cache(
        answer: Result<TokenInfo, IntrospectionError>,
        max_ttl: f64,
    ) -> (IntrospectionCache, Arc<Counting>) {
        let fake = Arc::new(Counting {
            calls: AtomicUsize::new(0),
            answer,
        });
        let config = CacheConfig {
            max_ttl: Duration::from_secs_f64(max_ttl),
            inactive_ttl: Duration::from_millis(100),
            capacity: 100,
        };
        (IntrospectionCache::new("as", &config, fake.clone()), fake)
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call_then_hits_make_none() {
        let (cache, fake) = cache(Ok(active(None)), 60.0);
        let cache = Arc::new(cache);
        let key = cache.key("tok");
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.lookup(key, "tok").await.unwrap().1 })
            })
            .collect();
        let mut misses = 0;
        for t in tasks {
            if t.await.unwrap() == CacheOutcome::Miss {
                misses += 1;
            }
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert!(misses >= 1);
        assert_eq!(cache.lookup(key, "tok").await.unwrap().1, CacheOutcome::Hit);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn errors_are_not_cached() {
        let (cache, fake) = cache(Err(IntrospectionError::Timeout), 60.0);
        let key = cache.key("tok");
        assert_eq!(
            cache.lookup(key, "tok").await.unwrap_err(),
            IntrospectionError::Timeout
        );
        assert!(cache.lookup(key, "tok").await.is_err());
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn entries_expire_at_the_shorter_of_exp_and_max() {
        let (cache, fake) = cache(Ok(active(None)), 0.2);
        let key = cache.key("tok");
        cache.lookup(key, "tok").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            cache.lookup(key, "tok").await.unwrap().1,
            CacheOutcome::Miss
        );
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);

        let life = Lifetime {
            max_ttl: Duration::from_secs(30),
            inactive_ttl: Duration::from_secs(1),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(life.of(&active(Some(now + 5))) <= Duration::from_secs(5));
        assert_eq!(life.of(&active(Some(now - 5))), Duration::ZERO);
        assert_eq!(life.of(&active(None)), Duration::from_secs(30));
        assert_eq!(life.of(&TokenInfo::inactive()), Duration::from_secs(1));
    }

    #[test]
    fn keys_separate_servers_and_hide_tokens() {
        assert_ne!(TokenKey::new("a", "t"), TokenKey::new("b", "t"));
        assert_eq!(TokenKey::new("a", "t"), TokenKey::new("a", "t"));
        assert_eq!(TokenKey::new("a", "t").short().len(), 12);
    }
}
