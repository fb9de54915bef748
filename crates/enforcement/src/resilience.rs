//! What stands between the gateway and a struggling authorization server: a bound on
//! concurrent calls and a circuit breaker. Both fail closed — a refused call is a 503,
//! never a pass.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Semaphore;

use crate::introspection::{IntrospectionError, Introspector, TokenInfo};

/// The breaker's state, as exported in `fapi_gateway_circuit_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go out; consecutive failures are counted.
    Closed = 0,
    /// Calls fail at once until the open period ends.
    Open = 1,
    /// One probe call is out; its outcome closes or reopens the breaker.
    HalfOpen = 2,
}

/// Opens after `threshold` consecutive failures; while open, calls fail at once; after
/// `open_for`, one probe call is let through (half-open) and its outcome closes or reopens it.
pub struct CircuitBreaker {
    threshold: usize,
    open_for: Duration,
    failures: AtomicUsize,
    state: AtomicU8,
    opened_at: Mutex<Option<Instant>>,
    on_change: Box<dyn Fn(CircuitState) + Send + Sync>,
    /// The authorization server's name, in the log lines of its transitions.
    name: String,
}

/// What the log says of a change of state: an outage begins (the breaker opens from
/// closed) or ends (it closes); the probes in between (half-open, reopened after a failed
/// probe) only at debug, so an outage is two lines however long it lasts.
pub fn announcement(from: CircuitState, to: CircuitState) -> Option<&'static str> {
    match (from, to) {
        (CircuitState::Closed, CircuitState::Open) => Some("opened"),
        (CircuitState::Open | CircuitState::HalfOpen, CircuitState::Closed) => Some("closed"),
        _ => None,
    }
}

impl CircuitBreaker {
    /// A closed breaker; `on_change` hears every change of state (the gateway exports it as
    /// a metric).
    pub fn new(
        threshold: usize,
        open_for: Duration,
        on_change: Box<dyn Fn(CircuitState) + Send + Sync>,
    ) -> CircuitBreaker {
        CircuitBreaker {
            threshold: threshold.max(1),
            open_for,
            failures: AtomicUsize::new(0),
            state: AtomicU8::new(CircuitState::Closed as u8),
            opened_at: Mutex::new(None),
            on_change,
            name: String::new(),
        }
    }

    /// Names the breaker after its authorization server, for its log lines.
    pub fn named(mut self, name: &str) -> CircuitBreaker {
        self.name = name.to_string();
        self
    }

    /// The current state.
    pub fn state(&self) -> CircuitState {
        match self.state.load(Ordering::SeqCst) {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        }
    }

    fn set(&self, s: CircuitState) {
        let before = self.state.swap(s as u8, Ordering::SeqCst);
        if before == s as u8 {
            return;
        }
        let from = match before {
            0 => CircuitState::Closed,
            1 => CircuitState::Open,
            _ => CircuitState::HalfOpen,
        };
        match announcement(from, s) {
            Some("opened") => tracing::warn!(
                server = %self.name,
                failures = self.failures.load(Ordering::SeqCst),
                open_seconds = self.open_for.as_secs_f64(),
                "circuit to the authorization server opened: its requests are refused with 503 until a probe succeeds"
            ),
            Some(_) => {
                tracing::info!(server = %self.name, "circuit to the authorization server closed: it answers again")
            }
            None => tracing::debug!(server = %self.name, from = ?from, to = ?s, "circuit state"),
        }
        (self.on_change)(s);
    }

    /// Whether a call may go out now.
    pub fn admit(&self) -> bool {
        match self.state() {
            CircuitState::Closed => true,
            CircuitState::HalfOpen => false, // a probe is already out
            CircuitState::Open => {
                let mut opened = self.opened_at.lock().unwrap();
                if opened.is_some_and(|t| t.elapsed() >= self.open_for) {
                    // Exactly one caller becomes the probe.
                    *opened = None;
                    self.set(CircuitState::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    /// Notes a successful call: the breaker closes and the count of failures restarts.
    pub fn record_success(&self) {
        self.failures.store(0, Ordering::SeqCst);
        self.set(CircuitState::Closed);
    }

    /// Notes a failed call: the breaker opens at the threshold, or at once after a failed probe.
    pub fn record_failure(&self) {
        let n = self.failures.fetch_add(1, Ordering::SeqCst) + 1;
        if self.state() == CircuitState::HalfOpen || n >= self.threshold {
            *self.opened_at.lock().unwrap() = Some(Instant::now());
            self.set(CircuitState::Open);
        }
    }
}

/// An introspector behind a concurrency bound and a circuit breaker.
pub struct Guarded<I> {
    inner: I,
    permits: Semaphore,
    wait: Duration,
    /// The breaker guarding the calls, shared with the server's
    /// [`ServerLink`](crate::cache::ServerLink).
    pub breaker: Arc<CircuitBreaker>,
}

impl<I> Guarded<I> {
    /// `max_concurrent` calls at once; a call waits at most `wait` for its turn.
    pub fn new(inner: I, max_concurrent: usize, wait: Duration, breaker: Arc<CircuitBreaker>) -> Guarded<I> {
        Guarded { inner, permits: Semaphore::new(max_concurrent.max(1)), wait, breaker }
    }
}

#[async_trait]
impl<I: Introspector> Introspector for Guarded<I> {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError> {
        if !self.breaker.admit() {
            return Err(IntrospectionError::CircuitOpen);
        }
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(p)) => p,
            _ => {
                // Not the server's fault; a probe that never went out must not wedge the breaker.
                if self.breaker.state() == CircuitState::HalfOpen {
                    self.breaker.record_failure();
                }
                return Err(IntrospectionError::Overloaded);
            }
        };
        let result = self.inner.introspect(token).await;
        drop(permit);
        match &result {
            Ok(_) => self.breaker.record_success(),
            Err(_) => self.breaker.record_failure(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    struct Flaky {
        up: AtomicBool,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Introspector for Flaky {
        async fn introspect(&self, _token: &str) -> Result<TokenInfo, IntrospectionError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.up.load(Ordering::SeqCst) {
                Ok(TokenInfo::inactive())
            } else {
                Err(IntrospectionError::Timeout)
            }
        }
    }

    #[tokio::test]
    async fn opens_after_threshold_and_recovers_through_one_probe() {
        let breaker = Arc::new(CircuitBreaker::new(3, Duration::from_millis(100), Box::new(|_| {})));
        let flaky = Flaky { up: AtomicBool::new(false), calls: AtomicUsize::new(0) };
        let g = Guarded::new(flaky, 4, Duration::from_secs(1), breaker.clone());
        for _ in 0..3 {
            assert_eq!(g.introspect("t").await, Err(IntrospectionError::Timeout));
        }
        assert_eq!(breaker.state(), CircuitState::Open);
        // Open: no call goes out.
        assert_eq!(g.introspect("t").await, Err(IntrospectionError::CircuitOpen));
        assert_eq!(g.inner.calls.load(Ordering::SeqCst), 3);
        // After the open period a failed probe reopens it...
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(g.introspect("t").await, Err(IntrospectionError::Timeout));
        assert_eq!(breaker.state(), CircuitState::Open);
        // ...and a successful probe closes it.
        g.inner.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert!(g.introspect("t").await.is_ok());
        assert_eq!(breaker.state(), CircuitState::Closed);
        assert_eq!(g.inner.calls.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn an_outage_is_announced_once_when_it_begins_and_once_when_it_ends() {
        let seen = Arc::new(Mutex::new(vec![CircuitState::Closed]));
        let record = seen.clone();
        let breaker = Arc::new(
            CircuitBreaker::new(2, Duration::from_millis(30), Box::new(move |s| record.lock().unwrap().push(s)))
                .named("as"),
        );
        let flaky = Flaky { up: AtomicBool::new(false), calls: AtomicUsize::new(0) };
        let g = Guarded::new(flaky, 4, Duration::from_secs(1), breaker.clone());
        for _ in 0..5 {
            let _ = g.introspect("t").await;
        }
        // Three failed probes, then a good one.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let _ = g.introspect("t").await;
        }
        g.inner.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(g.introspect("t").await.is_ok());
        assert!(g.introspect("t").await.is_ok());
        let states = seen.lock().unwrap().clone();
        let announced: Vec<&str> = states.windows(2).filter_map(|w| announcement(w[0], w[1])).collect();
        assert_eq!(announced, vec!["opened", "closed"], "{states:?}");
        assert!(states.len() > 4, "the probes changed state in between: {states:?}");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        struct Slow(AtomicUsize, AtomicUsize);
        #[async_trait]
        impl Introspector for Slow {
            async fn introspect(&self, _t: &str) -> Result<TokenInfo, IntrospectionError> {
                let now = self.0.fetch_add(1, Ordering::SeqCst) + 1;
                self.1.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                self.0.fetch_sub(1, Ordering::SeqCst);
                Ok(TokenInfo::inactive())
            }
        }
        let breaker = Arc::new(CircuitBreaker::new(3, Duration::from_secs(1), Box::new(|_| {})));
        let g =
            Arc::new(Guarded::new(Slow(AtomicUsize::new(0), AtomicUsize::new(0)), 2, Duration::from_secs(5), breaker));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let g = g.clone();
                tokio::spawn(async move { g.introspect("t").await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().is_ok());
        }
        assert_eq!(g.inner.1.load(Ordering::SeqCst), 2);
    }
}
