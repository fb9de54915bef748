//! The counters behind the limits: one per (API, rule, key), in a bounded map whose
//! entries expire once idle for longer than their window, so memory stays bounded by
//! [`DEFAULT_MAX_KEYS`] (or the host's choice) however many TPPs and consents there are.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Algorithm, KeyPart, LimitExceeded, LimitRule, RateLimitFields, UnattendedAccess, UNATTENDED_POLICY};

/// The counters a limiter keeps at most, by default (about 150 bytes each; an
/// unattended-access counter of N requests weighs 1 + N / 16 of them).
pub const DEFAULT_MAX_KEYS: u64 = 200_000;

/// What a request is counted by.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The API's name.
    pub api: &'a str,
    /// The matched route's path template.
    pub route: &'a str,
    /// The token's client.
    pub client_id: Option<&'a str>,
    /// The token's consent.
    pub consent_id: Option<&'a str>,
    /// The client certificate's thumbprint.
    pub certificate: Option<&'a str>,
    /// The account the path names (`account_param`), if any.
    pub account: Option<&'a str>,
    /// Whether the request carries a well-formed `x-fapi-customer-ip-address`.
    pub customer_present: bool,
}

/// The local counters of every limit. Created once by the host and handed to the
/// enforcer, so counts survive configuration reloads (a rule keeps its counters while its
/// name and numbers stay the same).
pub struct Limiter {
    counters: moka::sync::Cache<u64, Arc<Counter>>,
    hasher: std::collections::hash_map::RandomState,
    started: Instant,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("counters", &self.counters.entry_count()).finish_non_exhaustive()
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(DEFAULT_MAX_KEYS)
    }
}

struct Counter {
    idle: Duration,
    /// Its share of the limiter's bound (a request log is larger than a count).
    weight: u32,
    state: Mutex<State>,
}

enum State {
    /// GCRA: the theoretical arrival time, and the time one token stands for.
    Bucket {
        /// Nanoseconds since the limiter started.
        tat: u64,
        /// Nanoseconds per token.
        interval: u64,
    },
    /// The window's index since the epoch, and the requests counted in it.
    Window { index: u64, count: u64 },
    /// The admitted requests' times (Unix milliseconds) within the sliding window.
    Log(VecDeque<u64>),
}

/// A counter's answer: admitted (remaining, seconds until restored) or refused (retry after).
type Take = Result<(u64, u64), u64>;

struct IdleExpiry;

impl moka::Expiry<u64, Arc<Counter>> for IdleExpiry {
    fn expire_after_create(&self, _key: &u64, value: &Arc<Counter>, _at: Instant) -> Option<Duration> {
        Some(value.idle)
    }
    fn expire_after_read(
        &self,
        _key: &u64,
        value: &Arc<Counter>,
        _at: Instant,
        _remaining: Option<Duration>,
        _modified: Instant,
    ) -> Option<Duration> {
        Some(value.idle)
    }
}

fn ceil_seconds(nanos: u64) -> u64 {
    nanos.div_ceil(1_000_000_000).max(1)
}

fn ceil_seconds_ms(ms: u64) -> u64 {
    ms.div_ceil(1000).max(1)
}

impl Limiter {
    /// A limiter keeping at most `max_keys` counters (least used ones go first).
    pub fn new(max_keys: u64) -> Limiter {
        Limiter {
            counters: moka::sync::Cache::builder()
                .max_capacity(max_keys)
                .weigher(|_, c: &Arc<Counter>| c.weight)
                .expire_after(IdleExpiry)
                .build(),
            hasher: Default::default(),
            started: Instant::now(),
        }
    }

    /// Counts a request against every rule that applies to it, and against the
    /// unattended-access limit when the request is one (an account-information route,
    /// `route_consent_types` meeting the rule's, without the customer). Admitted: the
    /// `RateLimit` fields of the rules that counted it. Refused: the first rule over its
    /// limit; the counts this request already took from other rules are given back.
    pub fn admit(
        &self,
        rules: &[LimitRule],
        unattended: Option<&UnattendedAccess>,
        route_consent_types: &[String],
        subject: &Subject<'_>,
    ) -> Result<RateLimitFields, LimitExceeded> {
        let now_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.admit_at(rules, unattended, route_consent_types, subject, self.started.elapsed(), now_unix_ms)
    }

    /// [`Limiter::admit`] at a given time: `monotonic` since the limiter started (for
    /// token buckets), `unix_ms` since the epoch (for windows).
    pub fn admit_at(
        &self,
        rules: &[LimitRule],
        unattended: Option<&UnattendedAccess>,
        route_consent_types: &[String],
        subject: &Subject<'_>,
        monotonic: Duration,
        unix_ms: u64,
    ) -> Result<RateLimitFields, LimitExceeded> {
        let mut fields = RateLimitFields::default();
        let mut taken: Vec<Arc<Counter>> = Vec::new();
        let now = monotonic.as_nanos() as u64;
        let refuse = |taken: Vec<Arc<Counter>>, rule: &str, unattended: bool, retry: u64, fields| {
            for counter in taken.iter().rev() {
                counter.undo();
            }
            Err(LimitExceeded { rule: rule.to_string(), unattended, retry_after_seconds: retry, fields })
        };
        if let Some(u) = unattended {
            let counted = !subject.customer_present && route_consent_types.iter().any(|k| u.consent_types.contains(k));
            if counted {
                let mut h = self.hasher.build_hasher();
                (subject.api, UNATTENDED_POLICY, u.max_requests, u.window).hash(&mut h);
                (subject.consent_id.unwrap_or(""), subject.account.unwrap_or("")).hash(&mut h);
                let weight = 1 + u.max_requests / 16;
                let counter =
                    self.counter(h.finish(), u.window + Duration::from_secs(1), weight, || State::Log(VecDeque::new()));
                let window_ms = u.window.as_millis() as u64;
                let window_s = u.window.as_secs().max(1);
                match counter.take_log(u.max_requests as usize, window_ms, unix_ms) {
                    Ok((remaining, reset)) => {
                        fields.push(UNATTENDED_POLICY, u.max_requests as u64, window_s, remaining, reset);
                        taken.push(counter);
                    }
                    Err(retry) => {
                        let mut f = RateLimitFields::default();
                        f.push(UNATTENDED_POLICY, u.max_requests as u64, window_s, 0, retry);
                        return refuse(taken, UNATTENDED_POLICY, true, retry, f);
                    }
                }
            }
        }
        for rule in rules.iter().filter(|r| r.applies(subject.client_id, subject.route)) {
            let counter = self.counter(self.key(rule, subject), rule.algorithm.idle(), 1, || match rule.algorithm {
                Algorithm::TokenBucket { rate, per, .. } => {
                    State::Bucket { tat: 0, interval: (per.as_nanos() as u64 / rate).max(1) }
                }
                Algorithm::FixedWindow { .. } => State::Window { index: 0, count: 0 },
            });
            let (quota, window) = rule.algorithm.quota_and_window();
            match counter.take(&rule.algorithm, now, unix_ms) {
                Ok((remaining, reset)) => {
                    fields.push(&rule.name, quota, window, remaining, reset);
                    taken.push(counter);
                }
                Err(retry) => {
                    let mut f = RateLimitFields::default();
                    f.push(&rule.name, quota, window, 0, retry);
                    return refuse(taken, &rule.name, false, retry, f);
                }
            }
        }
        Ok(fields)
    }

    /// The counters kept now, and their weight against the bound (after pending
    /// evictions are applied).
    pub fn counters(&self) -> (u64, u64) {
        self.counters.run_pending_tasks();
        (self.counters.entry_count(), self.counters.weighted_size())
    }

    fn key(&self, rule: &LimitRule, subject: &Subject<'_>) -> u64 {
        let mut h = self.hasher.build_hasher();
        (subject.api, &rule.name, &rule.algorithm).hash(&mut h);
        for part in &rule.key {
            let value = match part {
                KeyPart::ClientId => subject.client_id,
                KeyPart::Consent => subject.consent_id,
                KeyPart::Certificate => subject.certificate,
                KeyPart::Route => Some(subject.route),
            };
            (part.name(), value.unwrap_or("")).hash(&mut h);
        }
        h.finish()
    }

    fn counter(&self, key: u64, idle: Duration, weight: u32, state: impl FnOnce() -> State) -> Arc<Counter> {
        self.counters.get_with(key, || Arc::new(Counter { idle, weight, state: Mutex::new(state()) }))
    }
}

impl Counter {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent count; keep counting.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, algorithm: &Algorithm, now: u64, unix_ms: u64) -> Take {
        let mut state = self.state();
        match (algorithm, &mut *state) {
            (Algorithm::TokenBucket { burst, .. }, State::Bucket { tat, interval }) => {
                let interval = *interval;
                let capacity = interval.saturating_mul(*burst);
                let next = (*tat).max(now) + interval;
                if next - now > capacity {
                    return Err(ceil_seconds(next - now - capacity));
                }
                *tat = next;
                Ok(((capacity - (next - now)) / interval, ceil_seconds(next - now)))
            }
            (Algorithm::FixedWindow { limit, window }, State::Window { index, count }) => {
                let window_ms = window * 1000;
                let current = unix_ms / window_ms;
                if *index != current {
                    *index = current;
                    *count = 0;
                }
                let reset = ceil_seconds_ms((current + 1) * window_ms - unix_ms);
                if *count >= *limit {
                    return Err(reset);
                }
                *count += 1;
                Ok((limit - *count, reset))
            }
            // A rule's key includes its algorithm, so the state always matches.
            _ => Err(1),
        }
    }

    fn take_log(&self, max: usize, window_ms: u64, unix_ms: u64) -> Take {
        let mut state = self.state();
        let State::Log(times) = &mut *state else { return Err(1) };
        while times.front().is_some_and(|&t| t + window_ms <= unix_ms) {
            times.pop_front();
        }
        if times.len() >= max {
            let oldest = times.front().copied().unwrap_or(unix_ms);
            return Err(ceil_seconds_ms(oldest + window_ms - unix_ms));
        }
        times.push_back(unix_ms);
        let oldest = times.front().copied().unwrap_or(unix_ms);
        Ok(((max - times.len()) as u64, ceil_seconds_ms(oldest + window_ms - unix_ms)))
    }

    /// Gives back what the last take took (the request was refused by another rule).
    fn undo(&self) {
        let mut state = self.state();
        match &mut *state {
            State::Bucket { tat, interval } => *tat = tat.saturating_sub(*interval),
            State::Window { count, .. } => *count = count.saturating_sub(1),
            State::Log(times) => {
                times.pop_back();
            }
        }
    }
}

#[cfg(test)]
mod tests;
