//! Traffic limits per TPP, declared in policy files: token-bucket rates (`[[rate_limit]]`),
//! fixed-window quotas (`[[quota]]`) and PSD2's limit on account-information requests
//! made without the customer present (`[unattended_access]`, RTS Art. 36(5)).
//!
//! The rules are values compiled with the API ([`LimitRule`], [`UnattendedAccess`]); the
//! counters live in a [`Limiter`] that the host creates once and hands to the enforcer, so
//! they outlive reloads. A refused request is a [`Refusal::TooManyRequests`](crate::refusal::Refusal::TooManyRequests): 429 with
//! `Retry-After`, the `RateLimit`/`RateLimit-Policy` fields (IETF httpapi
//! ratelimit-headers draft) and an Open Banking error body.

pub(crate) mod file;
mod fleet;
mod limiter;

use std::time::Duration;

pub use fleet::{FleetLimiter, SharedCounters, SharedGrant, SharedTake, SharedUnavailable};
pub use limiter::{Limiter, Subject, DEFAULT_MAX_KEYS};

/// The header Open Banking UK sets on requests the customer is present for.
pub const CUSTOMER_IP_HEADER: &str = "x-fapi-customer-ip-address";

/// What a limit counts by; the API is always part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    /// The token's `client_id` (the TPP's software).
    ClientId,
    /// The token's consent id.
    Consent,
    /// The SHA-256 thumbprint of the client certificate the request came with.
    Certificate,
    /// The matched route (its path template): each route has its own counter.
    Route,
}

impl KeyPart {
    /// The name policy files use.
    pub fn name(self) -> &'static str {
        match self {
            KeyPart::ClientId => "client_id",
            KeyPart::Consent => "consent",
            KeyPart::Certificate => "certificate",
            KeyPart::Route => "route",
        }
    }
}

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// A token bucket of `burst` tokens refilled at `rate` per `per` (GCRA): bursts up to
    /// `burst`, then a steady `rate`.
    TokenBucket {
        /// Tokens added per `per`.
        rate: u64,
        /// The period of `rate`.
        per: Duration,
        /// The bucket's size.
        burst: u64,
    },
    /// At most `limit` requests in each window of `window` seconds, windows aligned to the
    /// Unix epoch (a day's window starts at 00:00 UTC).
    FixedWindow {
        /// Requests per window.
        limit: u64,
        /// The window's length in seconds.
        window: u64,
    },
}

impl Algorithm {
    /// The quota and window advertised in `RateLimit-Policy` (`q`, `w`).
    pub fn quota_and_window(&self) -> (u64, u64) {
        match *self {
            Algorithm::TokenBucket { rate, per, burst } => {
                // A full bucket refills in burst × per / rate.
                let window = (per.as_secs_f64() * burst as f64 / rate as f64).ceil().max(1.0) as u64;
                (burst, window)
            }
            Algorithm::FixedWindow { limit, window } => (limit, window),
        }
    }

    /// How long a counter of this algorithm is worth keeping after its last use.
    pub(crate) fn idle(&self) -> Duration {
        match *self {
            Algorithm::TokenBucket { rate, per, burst } => {
                Duration::from_secs_f64(per.as_secs_f64() * burst as f64 / rate as f64) + Duration::from_secs(1)
            }
            Algorithm::FixedWindow { window, .. } => Duration::from_secs(window + 1),
        }
    }
}

/// One `[[rate_limit]]` or `[[quota]]` of an API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRule {
    /// Its name in `RateLimit-Policy` and in the refusal's message (unique in the API).
    pub name: String,
    /// What it counts by (empty: the whole API shares one counter).
    pub key: Vec<KeyPart>,
    /// How it counts.
    pub algorithm: Algorithm,
    /// Only requests of these clients count (empty: every client).
    pub client_ids: Vec<String>,
    /// Only requests to these routes (path templates) count (empty: every route).
    pub routes: Vec<String>,
}

impl LimitRule {
    /// Whether a request of `client_id` to `route` counts against this rule.
    pub fn applies(&self, client_id: Option<&str>, route: &str) -> bool {
        (self.client_ids.is_empty() || client_id.is_some_and(|c| self.client_ids.iter().any(|a| a == c)))
            && (self.routes.is_empty() || self.routes.iter().any(|r| r == route))
    }
}

/// PSD2 RTS Art. 36(5): account-information requests made without the customer present
/// (no `x-fapi-customer-ip-address`) are limited per consent and account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnattendedAccess {
    /// Requests allowed without the customer in each `window` (RTS: 4).
    pub max_requests: u32,
    /// The sliding window (RTS: 24 hours).
    pub window: Duration,
    /// Routes granted by these kinds of consent count (the profile's account-information
    /// kind, e.g. `account-access-consent`).
    pub consent_types: Vec<String>,
}

/// The policy name of the unattended-access limit in `RateLimit-Policy`.
pub const UNATTENDED_POLICY: &str = "psd2-unattended";

/// The `RateLimit-Policy` and `RateLimit` field values for a response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitFields {
    /// `"name";q=…;w=…`, one member per rule that counted the request.
    pub policy: String,
    /// `"name";r=…;t=…`, the remaining quota and seconds until it is restored, per rule.
    pub current: String,
}

impl RateLimitFields {
    pub(crate) fn push(&mut self, name: &str, quota: u64, window: u64, remaining: u64, reset: u64) {
        use std::fmt::Write;
        if !self.policy.is_empty() {
            self.policy.push_str(", ");
            self.current.push_str(", ");
        }
        let _ = write!(self.policy, "\"{name}\";q={quota};w={window}");
        let _ = write!(self.current, "\"{name}\";r={remaining};t={reset}");
    }

    /// Whether no rule counted the request.
    pub fn is_empty(&self) -> bool {
        self.policy.is_empty()
    }
}

/// A request over a limit: what the 429 says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitExceeded {
    /// The rule's name (or [`UNATTENDED_POLICY`]).
    pub rule: String,
    /// Whether it is PSD2's unattended-access limit.
    pub unattended: bool,
    /// Seconds until a request would be admitted again (`Retry-After`).
    pub retry_after_seconds: u64,
    /// The `RateLimit-Policy` and `RateLimit` fields.
    pub fields: RateLimitFields,
}
