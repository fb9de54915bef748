//! A fleet of gateways: revocations reach every replica through a Redis Stream, and
//! (optionally) introspection results are shared through Redis, sealed.
//!
//! [`Revocations`] is the one place a revocation is applied, whatever announced it (the
//! admin endpoint, a Security Event Token, an introspection that found a consent
//! revoked): it evicts in the local caches and appends to the feed. [`feed`] reads the
//! feed and applies what other replicas announced, and caps cached results' lifetime
//! while it cannot ([`ClusterConfig::degraded_max_ttl`]). [`shared`] is the sealed
//! shared cache.

mod connection;
pub mod feed;
pub mod limits;
mod metrics;
pub mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use tokio::sync::mpsc;

use fapi_enforcement::cache::{CacheConfig, ServerLinks};
use fapi_enforcement::config::{redact_url, ClusterConfig};
use fapi_enforcement::introspection::Introspector;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::revocation::{Revocation, Revoked};
use fapi_enforcement::traffic::{FleetLimiter, DEFAULT_MAX_KEYS};

use crate::error::GatewayError;
use limits::RedisCounters;
pub use metrics::ClusterMetrics;
use shared::{RevokedLately, SharedCache, SharedIntrospector};

/// Revocations waiting to be appended to the feed (while Redis is away they wait here,
/// in order; past this many the oldest are not announced and are counted).
const PUBLISH_QUEUE: usize = 65_536;

/// The one place a revocation is applied: locally in every matching server's cache, and
/// into the fleet's feed when `[cluster]` is configured.
pub struct Revocations {
    servers: Arc<ServerLinks>,
    metrics: Arc<Metrics>,
    publish: Option<mpsc::Sender<Revocation>>,
    cluster_metrics: Option<Arc<ClusterMetrics>>,
    /// Consents announced or heard of lately (at any server): an introspection that
    /// finds one of them not granting does not announce it again (no ping-pong between
    /// replicas whose clients keep presenting a revoked consent's token).
    recent: Mutex<HashMap<String, Instant>>,
    remember: Duration,
    /// When revocations were learnt here, against shared-cache values fetched before.
    revoked_lately: Option<Arc<RevokedLately>>,
}

impl Revocations {
    /// Local revocations only (no `[cluster]`).
    pub fn local(servers: Arc<ServerLinks>, metrics: Arc<Metrics>) -> Arc<Revocations> {
        Self::build(servers, metrics, None, None, Duration::from_secs(30), None)
    }

    fn build(
        servers: Arc<ServerLinks>,
        metrics: Arc<Metrics>,
        publish: Option<mpsc::Sender<Revocation>>,
        cluster_metrics: Option<Arc<ClusterMetrics>>,
        remember: Duration,
        revoked_lately: Option<Arc<RevokedLately>>,
    ) -> Arc<Revocations> {
        let revocations = Arc::new(Revocations {
            servers,
            metrics,
            publish,
            cluster_metrics,
            recent: Mutex::default(),
            remember,
            revoked_lately,
        });
        // Consents an introspection finds revoked are announced through this handle.
        let weak: Weak<Revocations> = Arc::downgrade(&revocations);
        for link in revocations.servers.values() {
            let weak = weak.clone();
            link.cache.set_revocation_listener(Arc::new(move |rev| {
                if let Some(r) = weak.upgrade() {
                    r.found_by_introspection(rev);
                }
            }));
        }
        revocations
    }

    /// Applies `rev`: evicts in every matching server's cache here and announces it to
    /// the fleet (queued: the feed's writer appends it, retrying while Redis is away).
    /// Returns how many cached results went here.
    pub async fn apply(&self, rev: Revocation) -> usize {
        let evicted = self.evict(&rev).await;
        self.metrics.revocations.with_label_values(&[kind(&rev.revoked)]).inc();
        if let Revoked::Consent(c) = &rev.revoked {
            self.remember(c);
        }
        self.announce(rev);
        evicted
    }

    /// Evicts what `rev` names in the local caches, announcing nothing.
    pub async fn evict(&self, rev: &Revocation) -> usize {
        if let Some(lately) = &self.revoked_lately {
            lately.note(&rev.revoked, self.remember);
        }
        let mut evicted = 0;
        for link in self.servers.values().filter(|l| rev.server.as_deref().is_none_or(|s| s == l.name)) {
            evicted += match &rev.revoked {
                Revoked::Consent(consent) => link.cache.revoke_consent(consent).await,
                Revoked::Token(key) => usize::from(link.cache.revoke_key(*key)),
                Revoked::Subject(subject) => link.cache.revoke_subject(subject).await,
            };
        }
        evicted
    }

    /// Whether `server` is one this gateway knows (`None`: all).
    pub fn knows_server(&self, server: Option<&str>) -> bool {
        server.is_none_or(|s| self.servers.contains_key(s))
    }

    /// The names of the authorization servers (for per-server token keys).
    pub fn server_names(&self) -> Vec<String> {
        self.servers.keys().cloned().collect()
    }

    fn announce(&self, rev: Revocation) {
        let Some(queue) = &self.publish else { return };
        if queue.try_send(rev).is_err() {
            tracing::error!(
                "revocation feed queue full or closed: a revocation is not announced to the other replicas"
            );
            if let Some(m) = &self.cluster_metrics {
                m.published.with_label_values(&["dropped"]).inc();
            }
        }
    }

    /// A cache found a consent no longer granting (and evicted its other tokens
    /// itself): announced, unless it was announced or heard of lately.
    fn found_by_introspection(&self, rev: Revocation) {
        let Revoked::Consent(consent) = &rev.revoked else { return };
        if !self.remember(consent) {
            return;
        }
        tracing::info!(consent_id = %consent, "introspection found the consent not granting: announced to the fleet");
        self.announce(rev);
    }

    /// Notes a consent as announced or heard of; returns whether it was not already.
    fn remember(&self, consent: &str) -> bool {
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() > 100_000 {
            recent.retain(|_, at| now.duration_since(*at) < self.remember);
        }
        let fresh = recent.get(consent).is_none_or(|at| now.duration_since(*at) >= self.remember);
        recent.insert(consent.to_string(), now);
        fresh
    }
}

/// The `kind` label of a revocation.
pub fn kind(revoked: &Revoked) -> &'static str {
    match revoked {
        Revoked::Consent(_) => "consent",
        Revoked::Token(_) => "token",
        Revoked::Subject(_) => "subject",
    }
}

/// A gateway's membership of a fleet: the Redis client, the revocation handle whose
/// announcements it appends, and the metrics.
pub struct Cluster {
    pub(crate) config: ClusterConfig,
    pub(crate) client: redis::Client,
    /// Tells this replica's entries in the feed from the others'.
    pub(crate) origin: String,
    pub(crate) servers: Arc<ServerLinks>,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) metrics: Arc<ClusterMetrics>,
    /// The longest a cached result lives: how far back a starting replica replays.
    pub(crate) replay_window: Duration,
    /// The shared introspection cache, with `cluster.shared_cache`.
    pub(crate) shared: Option<Arc<SharedCache>>,
    /// The fleet-wide limits' counters, with `cluster.fleet_limits`.
    limits: Option<Arc<RedisCounters>>,
    queue: Mutex<Option<mpsc::Receiver<Revocation>>>,
}

/// A gateway's fleet membership before its caches exist: the Redis client, the metrics
/// and the shared cache, which goes between each server's client and its cache.
pub struct Membership {
    config: ClusterConfig,
    client: redis::Client,
    metrics: Arc<ClusterMetrics>,
    shared: Option<Arc<SharedCache>>,
    revoked_lately: Arc<RevokedLately>,
    replay_window: Duration,
    limits: Option<Arc<RedisCounters>>,
}

impl Membership {
    /// Checks `[cluster]` (an invalid URL or CA fails the start; a Redis that is down does
    /// not) and prepares the shared cache, for caches configured as `cache`.
    pub fn prepare(config: &ClusterConfig, cache: &CacheConfig) -> Result<Membership, GatewayError> {
        let client = redis_client(config)?;
        let metrics = Arc::new(ClusterMetrics::new());
        let revoked_lately = Arc::new(RevokedLately::default());
        let replay_window = cache.max_ttl.max(cache.inactive_ttl) + shared::CLOCK_SKEW + Duration::from_secs(5);
        let shared = match (config.shared_cache, &config.cluster_key) {
            (true, Some(key)) => Some(Arc::new(SharedCache::new(
                key,
                &config.shared_cache_prefix,
                config.redis_timeout,
                cache,
                revoked_lately.clone(),
                metrics.clone(),
            ))),
            (true, None) => {
                return Err(GatewayError::Cluster("cluster.shared_cache needs cluster.cluster_key_file".into()))
            }
            (false, _) => None,
        };
        let limits = config.fleet_limits.then(|| {
            Arc::new(RedisCounters::new(
                &config.limits_prefix,
                config.redis_timeout,
                config.limit_lease,
                config.replicas_hint,
                metrics.clone(),
            ))
        });
        Ok(Membership { config: config.clone(), client, metrics, shared, revoked_lately, replay_window, limits })
    }

    /// The fleet-wide limits (with `cluster.fleet_limits`): the enforcer counts through them.
    pub fn fleet_limiter(&self) -> Option<Arc<FleetLimiter>> {
        let counters = self.limits.clone()?;
        Some(Arc::new(FleetLimiter::new(counters, DEFAULT_MAX_KEYS)))
    }

    /// `client` (server `server`'s guarded introspection client) behind the shared cache,
    /// if there is one.
    pub fn wrap(&self, server: &str, client: Arc<dyn Introspector>) -> Arc<dyn Introspector> {
        match &self.shared {
            Some(shared) => {
                Arc::new(SharedIntrospector { inner: client, server: server.to_string(), shared: shared.clone() })
            }
            None => client,
        }
    }

    /// Joins the fleet with the caches `servers`: the revocation handle, the metrics in
    /// `metrics`' registry.
    pub fn join(self, servers: Arc<ServerLinks>, metrics: &Arc<Metrics>) -> Result<Arc<Cluster>, GatewayError> {
        self.metrics.register(metrics)?;
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let revocations = Revocations::build(
            servers.clone(),
            metrics.clone(),
            Some(tx),
            Some(self.metrics.clone()),
            self.replay_window,
            Some(self.revoked_lately),
        );
        tracing::info!(redis = %redact_url(&self.config.redis_url), stream = %self.config.stream_key, shared_cache = self.config.shared_cache, "fleet: revocations go through the Redis stream");
        Ok(Arc::new(Cluster {
            config: self.config,
            client: self.client,
            origin: uuid::Uuid::new_v4().simple().to_string(),
            servers,
            revocations,
            metrics: self.metrics,
            replay_window: self.replay_window,
            shared: self.shared,
            limits: self.limits,
            queue: Mutex::new(Some(rx)),
        }))
    }
}

impl Cluster {
    /// The revocation handle (the admin endpoints apply revocations through it).
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revocations
    }

    /// Reads and writes the feed until `shutdown`.
    pub async fn run(self: Arc<Self>, shutdown: ShutdownWatch) {
        let queue = self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(queue) = queue else { return };
        let reader = tokio::spawn(feed::read(self.clone(), shutdown.clone()));
        let writer = tokio::spawn(feed::write(self.clone(), queue, shutdown.clone()));
        if let Some(limits) = &self.limits {
            tokio::spawn(limits.clone().keep_connected(self.client.clone(), shutdown.clone()));
        }
        if let Some(shared) = &self.shared {
            tokio::spawn(shared.clone().keep_connected(self.client.clone(), shutdown));
        }
        let _ = tokio::join!(reader, writer);
    }
}

/// The Redis client of `[cluster]`: TLS with the configured CA for `rediss://`,
/// credentials from the configuration (never in the URL).
fn redis_client(config: &ClusterConfig) -> Result<redis::Client, GatewayError> {
    use redis::IntoConnectionInfo;
    let bad = |m: String| GatewayError::Cluster(format!("cluster.redis_url {}: {m}", redact_url(&config.redis_url)));
    let mut info = config.redis_url.as_str().into_connection_info().map_err(|e| bad(e.to_string()))?;
    let mut settings = info.redis_settings().clone();
    if let Some(user) = &config.username {
        settings = settings.set_username(user);
    }
    if let Some(password) = &config.password {
        settings = settings.set_password(password);
    }
    info = info.set_redis_settings(settings);
    if config.redis_url.starts_with("rediss://") {
        let root_cert = match &config.ca {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| GatewayError::Cluster(format!("cluster.ca {}: cannot read: {e}", path.display())))?,
            ),
            None => None,
        };
        redis::Client::build_with_tls(info, redis::TlsCertificates { client_tls: None, root_cert })
            .map_err(|e| bad(e.to_string()))
    } else {
        redis::Client::open(info).map_err(|e| bad(e.to_string()))
    }
}

/// The fleet's feed as a pingora service (it starts and stops with the gateway).
pub struct ClusterService(pub Arc<Cluster>);

#[async_trait]
impl Service for ClusterService {
    async fn start_service(&mut self, _fds: Option<ListenFds>, shutdown: ShutdownWatch, _listeners_per_fd: usize) {
        self.0.clone().run(shutdown).await;
    }

    fn name(&self) -> &str {
        "fapi-gateway fleet"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}
