//! Fleet-wide rate limits, quotas and unattended-access counts: the library's
//! [`SharedCounters`] on Redis. Each take is one Lua script (atomic in Redis): a fixed
//! window's counter never goes past its limit, a token bucket is GCRA on Redis's clock,
//! the unattended-access log is a sorted set. Keys are `limits_prefix` + a SHA-256 digest
//! (never a client id, consent id or token in clear).
//!
//! Redis is never waited on longer than `cluster.redis_timeout_ms`; without a connection
//! a take fails at once, and the library then counts locally (limits ÷ `replicas_hint`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;

use fapi_enforcement::traffic::{SharedCounters, SharedGrant, SharedTake, SharedUnavailable};

use super::connection::RedisLink;
use super::ClusterMetrics;

/// A fixed window: grants min(want, limit − count), never counting past the limit.
const WINDOW: &str = r"
local limit, want, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local granted = math.max(0, math.min(want, limit - count))
if granted > 0 then
  count = redis.call('INCRBY', KEYS[1], granted)
  if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return {granted, math.max(0, limit - count), 0}
";

/// A token bucket (GCRA) on Redis's clock, in microseconds: the key holds the
/// theoretical arrival time.
const BUCKET: &str = r"
local interval, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local capacity = interval * burst
local available = math.floor((capacity - (tat - now)) / interval)
local granted = math.max(0, math.min(want, available))
if granted > 0 then
  tat = tat + granted * interval
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1000)
end
local retry = math.max(0, tat + interval - capacity - now)
return {granted, math.max(0, available - granted), math.ceil(retry / 1000)}
";

/// A sliding log: at most `max` entries within the window (Redis's clock, milliseconds).
const LOG: &str = r"
local max, window, member = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local n = redis.call('ZCARD', KEYS[1])
local granted = 0
if n < max then
  redis.call('ZADD', KEYS[1], now, member)
  redis.call('PEXPIRE', KEYS[1], window)
  n = n + 1
  granted = 1
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local reset = window
if oldest[2] then reset = tonumber(oldest[2]) + window - now end
return {granted, max - n, reset}
";

/// The limits' shared counters in the fleet's Redis, over a connection of their own.
pub struct RedisCounters {
    prefix: String,
    timeout: Duration,
    lease: u64,
    replicas: u64,
    link: RedisLink,
    metrics: Arc<ClusterMetrics>,
}

impl RedisCounters {
    /// Counters under `prefix`, each call bounded by `timeout`.
    pub fn new(
        prefix: &str,
        timeout: Duration,
        lease: u64,
        replicas: u64,
        metrics: Arc<ClusterMetrics>,
    ) -> RedisCounters {
        RedisCounters { prefix: prefix.to_string(), timeout, lease, replicas, link: RedisLink::new(timeout), metrics }
    }

    fn connection(&self) -> Option<MultiplexedConnection> {
        self.link.get()
    }

    fn broken(&self) {
        self.link.broken();
    }

    /// Keeps this part's Redis connection open until `shutdown` (see `RedisLink`).
    pub(crate) async fn keep_connected(
        self: Arc<Self>,
        client: redis::Client,
        shutdown: pingora_core::server::ShutdownWatch,
    ) {
        self.link.keep_connected(client, shutdown).await
    }
}

#[async_trait]
impl SharedCounters for RedisCounters {
    async fn take(&self, key: &str, take: SharedTake) -> Result<SharedGrant, SharedUnavailable> {
        let Some(mut conn) = self.connection() else {
            self.metrics.limits.with_label_values(&["unavailable"]).inc();
            return Err(SharedUnavailable);
        };
        let mut cmd = redis::cmd("EVAL");
        match take {
            SharedTake::Window { limit, want, ttl } => {
                cmd.arg(WINDOW).arg(1).arg(format!("{}w:{key}", self.prefix));
                cmd.arg(limit).arg(want).arg(ttl.as_millis() as u64);
            }
            SharedTake::Bucket { interval_micros, burst, want } => {
                cmd.arg(BUCKET).arg(1).arg(format!("{}b:{key}", self.prefix));
                cmd.arg(interval_micros).arg(burst).arg(want);
            }
            SharedTake::Log { max, window } => {
                cmd.arg(LOG).arg(1).arg(format!("{}{key}", self.prefix));
                cmd.arg(max).arg(window.as_millis() as u64).arg(uuid::Uuid::new_v4().simple().to_string());
            }
        }
        match tokio::time::timeout(self.timeout, cmd.query_async::<(i64, i64, i64)>(&mut conn)).await {
            Ok(Ok((granted, remaining, retry_ms))) => {
                self.metrics.limits.with_label_values(&["ok"]).inc();
                Ok(SharedGrant {
                    granted: granted.max(0) as u64,
                    remaining: remaining.max(0) as u64,
                    retry_ms: retry_ms.max(0) as u64,
                })
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "fleet-wide limits: Redis call failed");
                self.metrics.limits.with_label_values(&["error"]).inc();
                if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                    self.broken();
                }
                Err(SharedUnavailable)
            }
            Err(_) => {
                self.metrics.limits.with_label_values(&["timeout"]).inc();
                Err(SharedUnavailable)
            }
        }
    }

    fn lease_size(&self) -> u64 {
        self.lease
    }

    fn replicas(&self) -> u64 {
        self.replicas
    }

    fn fell_back(&self) {
        self.metrics.limits_fallback.inc();
    }
}
