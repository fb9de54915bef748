//! The revocation feed: a Redis Stream every replica appends its revocations to
//! (`XADD … MAXLEN ~ N`) and reads the others' from (`XREAD BLOCK`), from the last entry
//! it saw.
//!
//! Each read first checks, in the same transaction, that the stream's oldest entry is not
//! newer than the last one read here: if it is, entries this replica never read were
//! trimmed (or Redis lost the stream), any of them may be a revocation, and the whole
//! local cache is dropped (counted in `fapi_gateway_cluster_cache_flushes_total`).
//! While the feed cannot be read, every cached result lives at most
//! `cluster.degraded_max_ttl_seconds` (counted from the outage's detection for results
//! cached before it); the cap is lifted once the feed is read up to its end again.
//!
//! An entry: `o` the announcing replica, `k` the kind (`consent`, `token`, `subject`),
//! `v` the consent id, subject, or the token's cache key in hex (never the token), `s`
//! the authorization server (absent: all). Whoever can write the stream can make
//! replicas evict (and so introspect more), never let anything through.

use std::sync::Arc;
use std::time::Duration;

use pingora_core::server::ShutdownWatch;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;

use fapi_enforcement::cache::TokenKey;
use fapi_enforcement::revocation::{Revocation, Revoked};

use super::{kind, Cluster};

/// How long one blocking read waits for new entries.
const BLOCK_MS: u64 = 1_000;
/// Entries read at once.
const BATCH: usize = 1_000;

/// A stream entry id (`ms-seq`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(u64, u64);

impl EntryId {
    /// Parses `1700000000000-3`.
    pub fn parse(id: &str) -> Option<EntryId> {
        let (ms, seq) = id.split_once('-')?;
        Some(EntryId(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// Where this replica reads from.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// The last entry read: everything after it must still be in the stream.
    Seen(EntryId),
    /// A starting point (start-up, or after a flush): nothing before it matters.
    From(EntryId),
}

impl Position {
    fn id(self) -> EntryId {
        match self {
            Position::Seen(id) | Position::From(id) => id,
        }
    }
}

/// Whether the feed can be read; its transitions set or lift the caches' cap.
struct Health {
    cluster: Arc<Cluster>,
    degraded: bool,
}

impl Health {
    fn down(&mut self, why: &str) {
        if self.degraded {
            return;
        }
        self.degraded = true;
        let cap = self.cluster.config.degraded_max_ttl;
        for link in self.cluster.servers.values() {
            link.cache.set_degraded(Some(cap));
        }
        self.cluster.metrics.degraded.set(1);
        if let Some(shared) = &self.cluster.shared {
            shared.feed_down.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::warn!(error = %why, cap_seconds = cap.as_secs_f64(), "fleet: the revocation feed cannot be read: degraded mode, cached results now live at most the cap");
    }

    fn up(&mut self) {
        if !self.degraded {
            return;
        }
        self.degraded = false;
        for link in self.cluster.servers.values() {
            link.cache.set_degraded(None);
        }
        self.cluster.metrics.degraded.set(0);
        if let Some(shared) = &self.cluster.shared {
            shared.feed_down.store(false, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!("fleet: the revocation feed is read again (missed entries replayed): degraded mode over");
    }
}

async fn connect(cluster: &Cluster, response_timeout: Duration) -> Result<MultiplexedConnection, String> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(response_timeout));
    let connecting = cluster.client.get_multiplexed_async_connection_with_config(&config);
    match tokio::time::timeout(Duration::from_secs(2), connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("connecting to Redis timed out".into()),
    }
}

/// Sleeps `d`, or returns `true` at once when the gateway is stopping.
async fn stopping_within(shutdown: &mut ShutdownWatch, d: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

type Entry = (String, Vec<Vec<u8>>);
type ReadReply = Option<Vec<(String, Vec<Entry>)>>;

/// Reads the feed until `shutdown`, applying other replicas' revocations.
pub(crate) async fn read(cluster: Arc<Cluster>, mut shutdown: ShutdownWatch) {
    let mut health = Health { cluster: cluster.clone(), degraded: false };
    let mut position: Option<Position> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut conn = match connect(&cluster, Duration::from_millis(BLOCK_MS + 1_000)).await {
            Ok(c) => c,
            Err(e) => {
                health.down(&e);
                if stopping_within(&mut shutdown, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        if position.is_none() {
            // A replica that starts replays what any cached result could predate.
            match redis::cmd("TIME").query_async::<(u64, u64)>(&mut conn).await {
                Ok((seconds, _)) => {
                    let start = (seconds * 1000).saturating_sub(cluster.replay_window.as_millis() as u64);
                    position = Some(Position::From(EntryId(start, 0)));
                }
                Err(e) => {
                    health.down(&e.to_string());
                    continue;
                }
            }
        }
        while let Some(at) = position {
            let step = tokio::select! {
                _ = shutdown.changed() => return,
                step = read_once(&cluster, &mut conn, at, &mut health) => step,
            };
            match step {
                Ok(next) => position = Some(next),
                Err(e) => {
                    health.down(&e);
                    break;
                }
            }
        }
        if stopping_within(&mut shutdown, Duration::from_millis(50)).await {
            return;
        }
    }
}

/// One read: the gap check and what is there at once, in one transaction; if nothing
/// is, a blocking read for what comes. Returns the new position.
async fn read_once(
    cluster: &Cluster,
    conn: &mut MultiplexedConnection,
    at: Position,
    health: &mut Health,
) -> Result<Position, String> {
    let key = &cluster.config.stream_key;
    let (oldest, ready): (Vec<Entry>, ReadReply) = redis::pipe()
        .atomic()
        .cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .cmd("XREAD")
        .arg("COUNT")
        .arg(BATCH)
        .arg("STREAMS")
        .arg(key)
        .arg(at.id().to_string())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    if let Position::Seen(last) = at {
        let oldest = oldest.first().and_then(|(id, _)| EntryId::parse(id));
        if oldest.is_none_or(|o| o > last) {
            // Entries after `last` may be gone unread: anything cached may be revoked.
            let mut dropped = 0;
            for link in cluster.servers.values() {
                dropped += link.cache.flush();
            }
            cluster.metrics.flushes.inc();
            tracing::warn!(last_read = %last, oldest = ?oldest.map(|o| o.to_string()), dropped, "fleet: the revocation feed lost entries this replica had not read: every cached result dropped");
            health.up();
            return Ok(Position::From(EntryId(0, 0)));
        }
    }
    let entries = entries_of(ready);
    if !entries.is_empty() {
        let full = entries.len() >= BATCH;
        let next = apply(cluster, entries, at).await;
        if !full {
            health.up();
        }
        return Ok(next);
    }
    health.up();
    let waited: ReadReply = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(BATCH)
        .arg("BLOCK")
        .arg(BLOCK_MS)
        .arg("STREAMS")
        .arg(key)
        .arg(at.id().to_string())
        .query_async(conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(apply(cluster, entries_of(waited), at).await)
}

fn entries_of(reply: ReadReply) -> Vec<Entry> {
    reply.unwrap_or_default().into_iter().flat_map(|(_, entries)| entries).collect()
}

/// Applies other replicas' entries; returns the position after the last one.
async fn apply(cluster: &Cluster, entries: Vec<Entry>, mut at: Position) -> Position {
    for (id, fields) in entries {
        let Some(entry_id) = EntryId::parse(&id) else {
            tracing::warn!(id, "fleet: a feed entry with an unreadable id: skipped");
            continue;
        };
        at = Position::Seen(entry_id);
        match decode(&fields) {
            Ok((origin, _)) if origin == cluster.origin => {}
            Ok((_, rev)) => {
                let evicted = cluster.revocations.evict(&rev).await;
                if let Revoked::Consent(c) = &rev.revoked {
                    cluster.revocations.remember(c);
                }
                cluster.metrics.received.with_label_values(&[kind(&rev.revoked)]).inc();
                tracing::debug!(id, kind = kind(&rev.revoked), evicted, "fleet: revocation applied");
            }
            Err(e) => tracing::warn!(id, error = %e, "fleet: an unreadable feed entry: skipped"),
        }
    }
    at
}

/// The fields of a feed entry announcing `rev` from replica `origin`.
pub fn encode(origin: &str, rev: &Revocation) -> Vec<(&'static str, Vec<u8>)> {
    let value = match &rev.revoked {
        Revoked::Consent(c) => c.as_bytes().to_vec(),
        Revoked::Subject(s) => s.as_bytes().to_vec(),
        Revoked::Token(key) => key.to_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes(),
    };
    let mut fields =
        vec![("o", origin.as_bytes().to_vec()), ("k", kind(&rev.revoked).as_bytes().to_vec()), ("v", value)];
    if let Some(server) = &rev.server {
        fields.push(("s", server.as_bytes().to_vec()));
    }
    fields
}

/// The announcing replica and the revocation of a feed entry's fields.
pub fn decode(fields: &[Vec<u8>]) -> Result<(String, Revocation), String> {
    let mut origin = None;
    let mut kind = None;
    let mut value = None;
    let mut server = None;
    for pair in fields.chunks(2) {
        let [name, v] = pair else { return Err("odd field list".into()) };
        let v = String::from_utf8(v.clone()).map_err(|_| "a field is not UTF-8")?;
        match name.as_slice() {
            b"o" => origin = Some(v),
            b"k" => kind = Some(v),
            b"v" => value = Some(v),
            b"s" => server = Some(v),
            _ => {}
        }
    }
    let (Some(origin), Some(kind), Some(value)) = (origin, kind, value) else {
        return Err("missing o, k or v".into());
    };
    if value.is_empty() {
        return Err("empty value".into());
    }
    let revoked = match kind.as_str() {
        "consent" => Revoked::Consent(value),
        "subject" => Revoked::Subject(value),
        "token" => {
            let mut bytes = [0u8; 16];
            if value.len() != 32 {
                return Err("a token key is 32 hex digits".into());
            }
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(&value[2 * i..2 * i + 2], 16).map_err(|_| "a token key is hex")?;
            }
            if server.is_none() {
                return Err("a token revocation names its server".into());
            }
            Revoked::Token(TokenKey::from_bytes(bytes))
        }
        other => return Err(format!("unknown kind `{other}`")),
    };
    Ok((origin, Revocation { server, revoked }))
}

/// Appends this replica's revocations to the feed, in order, retrying while Redis is
/// away, until `shutdown`.
pub(crate) async fn write(cluster: Arc<Cluster>, mut queue: mpsc::Receiver<Revocation>, mut shutdown: ShutdownWatch) {
    let mut conn: Option<MultiplexedConnection> = None;
    loop {
        let rev = tokio::select! {
            rev = queue.recv() => match rev { Some(r) => r, None => return },
            _ = shutdown.changed() => return,
        };
        let fields = encode(&cluster.origin, &rev);
        let mut logged = false;
        loop {
            if conn.is_none() {
                conn = connect(&cluster, Duration::from_secs(1)).await.ok();
            }
            if let Some(c) = &mut conn {
                let mut xadd = redis::cmd("XADD");
                xadd.arg(&cluster.config.stream_key).arg("MAXLEN").arg("~").arg(cluster.config.stream_maxlen).arg("*");
                for (name, value) in &fields {
                    xadd.arg(*name).arg(value.as_slice());
                }
                match xadd.query_async::<String>(c).await {
                    Ok(_) => {
                        cluster.metrics.published.with_label_values(&["ok"]).inc();
                        if logged {
                            tracing::info!("fleet: a delayed revocation reached the feed");
                        }
                        break;
                    }
                    Err(e) => {
                        if !logged {
                            tracing::warn!(error = %e, "fleet: cannot append a revocation to the feed: retrying");
                            logged = true;
                        }
                        conn = None;
                    }
                }
            }
            cluster.metrics.published.with_label_values(&["error"]).inc();
            if stopping_within(&mut shutdown, Duration::from_millis(200)).await {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_junk_is_refused() {
        let key = TokenKey::new("default", "tok");
        for rev in [
            Revocation { server: None, revoked: Revoked::Consent("c-1".into()) },
            Revocation { server: Some("default".into()), revoked: Revoked::Token(key) },
            Revocation { server: Some("x".into()), revoked: Revoked::Subject("alice".into()) },
        ] {
            let fields: Vec<Vec<u8>> =
                encode("me", &rev).into_iter().flat_map(|(n, v)| [n.as_bytes().to_vec(), v]).collect();
            assert_eq!(decode(&fields).unwrap(), ("me".to_string(), rev));
        }
        let junk = |f: &[&str]| decode(&f.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>()).is_err();
        assert!(junk(&["o", "me", "k", "token", "v", "abc", "s", "d"]));
        assert!(junk(&["o", "me", "k", "token", "v", &"ab".repeat(16)]));
        assert!(junk(&["o", "me", "k", "bogus", "v", "x"]));
        assert!(junk(&["o", "me", "k", "consent"]));
        assert!(junk(&["o", "me", "k", "consent", "v", ""]));
        assert!(EntryId::parse("5-1").unwrap() < EntryId::parse("5-2").unwrap());
        assert!(EntryId::parse("10-0").unwrap() > EntryId::parse("9-99").unwrap());
    }
}
