//! A Redis connection kept open off the request path, for the parts of `[cluster]` that
//! ask Redis while a request waits (the shared cache, fleet-wide limits): a request takes
//! the connection if there is one and never waits for a reconnect.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

/// The connection, when there is one.
pub(crate) struct RedisLink {
    /// Each command's response timeout (the request path's bound).
    timeout: Duration,
    conn: Mutex<Option<MultiplexedConnection>>,
}

impl RedisLink {
    pub(crate) fn new(timeout: Duration) -> RedisLink {
        RedisLink { timeout, conn: Mutex::new(None) }
    }

    /// The open connection, if any (a clone: multiplexed connections are shared).
    pub(crate) fn get(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the connection after an error; `keep_connected` makes a new one.
    pub(crate) fn broken(&self) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Keeps a connection open (reconnecting every 250 ms while Redis is away) until
    /// `shutdown`.
    pub(crate) async fn keep_connected(
        &self,
        client: redis::Client,
        mut shutdown: pingora_core::server::ShutdownWatch,
    ) {
        loop {
            if self.get().is_none() {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(self.timeout));
                let connecting = client.get_multiplexed_async_connection_with_config(&config);
                if let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), connecting).await {
                    *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}
