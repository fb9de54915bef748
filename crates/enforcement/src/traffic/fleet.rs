//! Limits counted fleet-wide through shared counters (the gateway's Redis), with leases.
//!
//! A replica takes a *lease* of up to `lease` units from a shared counter and admits
//! locally until it is spent; a shared counter never grants more than its limit, so the
//! fleet never admits more than a fixed window's limit (units leased but not used by a
//! replica before the window ends are lost: the fleet may refuse up to
//! (replicas − 1) × (lease − 1) requests early). Token buckets are leased the same way
//! (a lease is dropped once older than the time its tokens stand for), and the
//! unattended-access log is kept whole in the shared store (one call per counted
//! request: a few a day per consent). While the shared store is slow or down, requests
//! are counted here alone with each limit divided by the fleet's replica count.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::limiter::{Limiter, Subject};
use super::{Algorithm, KeyPart, LimitExceeded, LimitRule, RateLimitFields, UnattendedAccess, UNATTENDED_POLICY};

/// What a shared counter is asked to take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedTake {
    /// Up to `want` units of a fixed window counting at most `limit` (the key names the
    /// window); the counter may be forgotten after `ttl`.
    Window {
        /// The window's limit.
        limit: u64,
        /// Units asked for (the lease).
        want: u64,
        /// How long the counter must live.
        ttl: Duration,
    },
    /// Up to `want` tokens of a token bucket (GCRA on the shared store's clock).
    Bucket {
        /// Microseconds one token stands for.
        interval_micros: u64,
        /// The bucket's size.
        burst: u64,
        /// Tokens asked for (the lease).
        want: u64,
    },
    /// One entry in a sliding log of at most `max` entries within `window`.
    Log {
        /// Entries allowed in the window.
        max: u64,
        /// The sliding window.
        window: Duration,
    },
}

/// A shared counter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedGrant {
    /// Units granted (0: the limit is reached).
    pub granted: u64,
    /// What the shared counter has left after this grant.
    pub remaining: u64,
    /// Milliseconds until a unit is available again (buckets and logs; 0 if unknown).
    pub retry_ms: u64,
}

/// The shared store did not answer in time (or is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedUnavailable;

/// Counters shared by every replica of a fleet (the gateway implements it on Redis).
/// Implementations answer within a short bound, or `Err`; they never block for long.
#[async_trait]
pub trait SharedCounters: Send + Sync {
    /// Takes from the counter `key` (a hex digest and suffix: never a token, client id
    /// or consent id in clear).
    async fn take(&self, key: &str, take: SharedTake) -> Result<SharedGrant, SharedUnavailable>;

    /// Units a replica leases at a time (1: every request asks the shared store).
    fn lease_size(&self) -> u64;

    /// The fleet's replica count: each limit is divided by it while counting locally.
    fn replicas(&self) -> u64;

    /// Called once for each request counted locally because the store was unavailable.
    fn fell_back(&self) {}
}

/// How long the shared store is not asked again after it failed to answer.
const RETRY_SHARED_AFTER: Duration = Duration::from_secs(1);

/// Units leased from one shared counter and not yet used here.
#[derive(Default)]
struct Lease {
    /// The window's index, or for buckets when the lease lapses (ms since the limiter started).
    epoch: u64,
    units: u64,
    /// The shared counter's remaining units when last asked.
    shared_remaining: u64,
    /// The shared counter granted nothing: refused here until this (ms since start).
    refused_until: u64,
}

/// Limits counted fleet-wide (see the module's documentation).
pub struct FleetLimiter {
    shared: Arc<dyn SharedCounters>,
    /// The local fallback, counting limits divided by the replica count.
    local: Limiter,
    leases: moka::sync::Cache<[u8; 16], Arc<Mutex<Lease>>>,
    started: Instant,
    /// Ms since start before which the shared store is not asked (0: ask).
    shared_down_until: AtomicU64,
}

impl std::fmt::Debug for FleetLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetLimiter").field("leases", &self.leases.entry_count()).finish_non_exhaustive()
    }
}

enum Step {
    Admitted { remaining: u64, reset: u64 },
    Refused { retry: u64 },
    Unavailable,
}

impl FleetLimiter {
    /// Limits counted through `shared`, keeping at most `max_keys` leases and local counters.
    pub fn new(shared: Arc<dyn SharedCounters>, max_keys: u64) -> FleetLimiter {
        FleetLimiter {
            shared,
            local: Limiter::new(max_keys),
            leases: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(Duration::from_secs(24 * 3600 + 60))
                .build(),
            started: Instant::now(),
            shared_down_until: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// As [`Limiter::admit`], counted fleet-wide: the rate limits and quotas first, then
    /// the unattended-access limit. Falls back to local counting (limits ÷ replicas) when
    /// the shared store does not answer.
    pub async fn admit(
        &self,
        rules: &[LimitRule],
        unattended: Option<&UnattendedAccess>,
        route_consent_types: &[String],
        subject: &Subject<'_>,
    ) -> Result<RateLimitFields, LimitExceeded> {
        if self.now_ms() < self.shared_down_until.load(Ordering::Relaxed) {
            return self.fallback(rules, unattended, route_consent_types, subject);
        }
        let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut fields = RateLimitFields::default();
        let mut taken: Vec<Arc<Mutex<Lease>>> = Vec::new();
        let give_back = |taken: &[Arc<Mutex<Lease>>]| {
            for lease in taken {
                lock(lease).units += 1;
            }
        };
        for rule in rules.iter().filter(|r| r.applies(subject.client_id, subject.route)) {
            let digest = rule_digest(rule, subject);
            let lease = self.leases.get_with(digest, Default::default);
            let (quota, window) = rule.algorithm.quota_and_window();
            match self.take_rule(&rule.algorithm, &digest, &lease, unix_ms).await {
                Step::Admitted { remaining, reset } => {
                    fields.push(&rule.name, quota, window, remaining, reset);
                    taken.push(lease);
                }
                Step::Refused { retry } => {
                    give_back(&taken);
                    let mut f = RateLimitFields::default();
                    f.push(&rule.name, quota, window, 0, retry);
                    return Err(LimitExceeded {
                        rule: rule.name.clone(),
                        unattended: false,
                        retry_after_seconds: retry,
                        fields: f,
                    });
                }
                Step::Unavailable => {
                    give_back(&taken);
                    return self.shared_failed(rules, unattended, route_consent_types, subject);
                }
            }
        }
        if let Some(u) = unattended.filter(|u| counts_unattended(u, route_consent_types, subject)) {
            let key = unattended_key(u, subject);
            let window_s = u.window.as_secs().max(1);
            let max = u.max_requests as u64;
            match self.shared.take(&key, SharedTake::Log { max, window: u.window }).await {
                Ok(g) if g.granted > 0 => {
                    fields.push(UNATTENDED_POLICY, max, window_s, g.remaining, ceil_s(g.retry_ms));
                }
                Ok(g) => {
                    give_back(&taken);
                    let retry = ceil_s(g.retry_ms);
                    let mut f = RateLimitFields::default();
                    f.push(UNATTENDED_POLICY, max, window_s, 0, retry);
                    return Err(LimitExceeded {
                        rule: UNATTENDED_POLICY.into(),
                        unattended: true,
                        retry_after_seconds: retry,
                        fields: f,
                    });
                }
                Err(SharedUnavailable) => {
                    give_back(&taken);
                    return self.shared_failed(rules, unattended, route_consent_types, subject);
                }
            }
        }
        Ok(fields)
    }

    async fn take_rule(&self, algorithm: &Algorithm, digest: &[u8; 16], lease: &Mutex<Lease>, unix_ms: u64) -> Step {
        let now = self.now_ms();
        let lease_size = self.shared.lease_size().max(1);
        let (epoch, take, reset) = match *algorithm {
            Algorithm::FixedWindow { limit, window } => {
                let window_ms = window * 1000;
                let index = unix_ms / window_ms;
                let reset = ceil_s((index + 1) * window_ms - unix_ms);
                let ttl = Duration::from_millis((index + 1) * window_ms - unix_ms) + Duration::from_secs(60);
                (index, SharedTake::Window { limit, want: lease_size, ttl }, reset)
            }
            Algorithm::TokenBucket { rate, per, burst } => {
                let interval_micros = (per.as_micros() as u64 / rate).max(1);
                // A lease is good for the time its tokens stand for (at least a second).
                let lapse = now + (interval_micros * lease_size / 1000).max(1000);
                (lapse, SharedTake::Bucket { interval_micros, burst, want: lease_size }, ceil_s(interval_micros / 1000))
            }
        };
        let is_window = matches!(algorithm, Algorithm::FixedWindow { .. });
        {
            let mut l = lock(lease);
            let current = if is_window { l.epoch == epoch } else { l.epoch > now };
            if !current {
                *l = Lease { epoch, ..Lease::default() };
            }
            if l.units > 0 {
                l.units -= 1;
                return Step::Admitted { remaining: l.shared_remaining + l.units, reset };
            }
            if l.refused_until > now {
                return Step::Refused { retry: ceil_s(l.refused_until - now) };
            }
        }
        // Only now the key's text: a request served from the lease builds none.
        let key = match take {
            SharedTake::Window { .. } => format!("{}:{epoch}", hex(digest)),
            _ => hex(digest),
        };
        let grant = match self.shared.take(&key, take).await {
            Ok(g) => g,
            Err(SharedUnavailable) => return Step::Unavailable,
        };
        let mut l = lock(lease);
        let current = if is_window { l.epoch == epoch } else { l.epoch > now };
        if !current {
            *l = Lease { epoch, ..Lease::default() };
        }
        l.shared_remaining = grant.remaining;
        if grant.granted == 0 {
            let retry_ms = if is_window { reset * 1000 } else { grant.retry_ms.max(1) };
            l.refused_until = now + retry_ms;
            return Step::Refused { retry: ceil_s(retry_ms) };
        }
        l.units += grant.granted - 1;
        Step::Admitted { remaining: l.shared_remaining + l.units, reset }
    }

    fn shared_failed(
        &self,
        rules: &[LimitRule],
        unattended: Option<&UnattendedAccess>,
        route_consent_types: &[String],
        subject: &Subject<'_>,
    ) -> Result<RateLimitFields, LimitExceeded> {
        let until = self.now_ms() + RETRY_SHARED_AFTER.as_millis() as u64;
        self.shared_down_until.store(until, Ordering::Relaxed);
        tracing::warn!("fleet-wide limits: shared counters unavailable; counting locally (limits ÷ replicas)");
        self.fallback(rules, unattended, route_consent_types, subject)
    }

    /// Counts here alone, each limit divided by the replica count (at least 1).
    fn fallback(
        &self,
        rules: &[LimitRule],
        unattended: Option<&UnattendedAccess>,
        route_consent_types: &[String],
        subject: &Subject<'_>,
    ) -> Result<RateLimitFields, LimitExceeded> {
        self.shared.fell_back();
        let replicas = self.shared.replicas().max(1);
        let rules: Vec<LimitRule> = rules.iter().map(|r| divided(r, replicas)).collect();
        let unattended = unattended
            .map(|u| UnattendedAccess { max_requests: (u.max_requests / replicas as u32).max(1), ..u.clone() });
        self.local.admit(&rules, unattended.as_ref(), route_consent_types, subject)
    }
}

/// `rule` with its numbers divided by `replicas` (at least 1).
fn divided(rule: &LimitRule, replicas: u64) -> LimitRule {
    let algorithm = match rule.algorithm {
        Algorithm::TokenBucket { rate, per, burst } => {
            Algorithm::TokenBucket { rate: (rate / replicas).max(1), per, burst: (burst / replicas).max(1) }
        }
        Algorithm::FixedWindow { limit, window } => Algorithm::FixedWindow { limit: (limit / replicas).max(1), window },
    };
    LimitRule { algorithm, ..rule.clone() }
}

fn counts_unattended(u: &UnattendedAccess, route_consent_types: &[String], subject: &Subject<'_>) -> bool {
    !subject.customer_present && route_consent_types.iter().any(|k| u.consent_types.contains(k))
}

fn lock(lease: &Mutex<Lease>) -> std::sync::MutexGuard<'_, Lease> {
    lease.lock().unwrap_or_else(|e| e.into_inner())
}

fn ceil_s(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

/// A length-prefixed field, so that no two subjects hash alike.
fn field(h: &mut Sha256, value: &str) {
    h.update((value.len() as u64).to_be_bytes());
    h.update(value.as_bytes());
}

/// The first 128 bits of SHA-256 over the API, the rule (name and numbers) and the
/// subject's key values: client ids and consent ids never reach the shared store.
fn rule_digest(rule: &LimitRule, subject: &Subject<'_>) -> [u8; 16] {
    let mut h = Sha256::new();
    field(&mut h, "rule");
    field(&mut h, subject.api);
    field(&mut h, &rule.name);
    let numbers = match rule.algorithm {
        Algorithm::TokenBucket { rate, per, burst } => [0, rate, per.as_millis() as u64, burst],
        Algorithm::FixedWindow { limit, window } => [1, limit, window, 0],
    };
    for n in numbers {
        h.update(n.to_be_bytes());
    }
    for part in &rule.key {
        let value = match part {
            KeyPart::ClientId => subject.client_id,
            KeyPart::Consent => subject.consent_id,
            KeyPart::Certificate => subject.certificate,
            KeyPart::Route => Some(subject.route),
        };
        field(&mut h, part.name());
        field(&mut h, value.unwrap_or(""));
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

fn unattended_key(u: &UnattendedAccess, subject: &Subject<'_>) -> String {
    let mut h = Sha256::new();
    field(&mut h, UNATTENDED_POLICY);
    field(&mut h, subject.api);
    field(&mut h, &format!("{}/{}", u.max_requests, u.window.as_millis()));
    field(&mut h, subject.consent_id.unwrap_or(""));
    field(&mut h, subject.account.unwrap_or(""));
    format!("u:{}", hex(&h.finalize()[..16]))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests;
