//! The bank backends: for each `[upstreams]` entry a pool of targets behind pingora's
//! load balancer (round robin, or consistent hashing by consent id), the peer to connect
//! to (plain HTTP, or TLS with the upstream's CA, SNI and the gateway's client
//! certificate), passive ejection of targets whose connect failed, and (health.rs)
//! active health checks run as pingora background services.

mod health;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::utils::tls::{parse_x509, CertKey, WrappedX509};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};

use fapi_enforcement::config::{Balancing, UpstreamSettings};

pub use health::HealthChecks;

/// How far a selection walks the hash ring or the round before giving up.
const MAX_ITERATIONS: usize = 256;

/// Every upstream's pool, by name. Built once at start (upstream changes need a restart).
pub struct Upstreams {
    pools: HashMap<String, Arc<Pool>>,
}

impl Upstreams {
    /// Builds the pools (and their health checks, which [`Upstreams::health_checks`] runs).
    pub fn new(settings: &BTreeMap<String, UpstreamSettings>) -> Upstreams {
        let pools = settings.iter().map(|(name, s)| (name.clone(), Arc::new(Pool::new(s)))).collect();
        Upstreams { pools }
    }

    /// The pool of the upstream named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// The background work of every pool with active health checks.
    pub fn health_checks(&self) -> Vec<HealthChecks> {
        self.pools.values().filter_map(|p| p.health_checks()).collect()
    }
}

enum Balancer {
    RoundRobin(Arc<LoadBalancer<RoundRobin>>),
    ConsentHash(Arc<LoadBalancer<Consistent>>),
}

/// Targets taken out after a failed connect, with when.
#[derive(Default)]
pub(crate) struct Ejections {
    /// How many are out (read without the lock on every request).
    count: AtomicUsize,
    at: Mutex<HashMap<SocketAddr, Instant>>,
}

impl Ejections {
    fn eject(&self, target: SocketAddr) {
        let mut at = self.at.lock().unwrap();
        at.insert(target, Instant::now());
        self.count.store(at.len(), Ordering::Release);
    }

    /// A health check that started after the ejection passed: the target is back.
    pub(crate) fn readmit(&self, target: SocketAddr, check_started: Instant) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut at = self.at.lock().unwrap();
        if at.get(&target).is_some_and(|ejected| *ejected <= check_started) {
            at.remove(&target);
            tracing::info!(%target, "upstream target back after a passing health check");
        }
        self.count.store(at.len(), Ordering::Release);
    }

    fn is_out(&self, target: &SocketAddr, ejection: Duration) -> bool {
        if self.count.load(Ordering::Acquire) == 0 {
            return false;
        }
        let mut at = self.at.lock().unwrap();
        match at.get(target) {
            Some(ejected) if ejected.elapsed() < ejection => true,
            Some(_) => {
                at.remove(target);
                self.count.store(at.len(), Ordering::Release);
                false
            }
            None => false,
        }
    }
}

/// One upstream: its targets, how to pick one, how to reach it.
pub struct Pool {
    /// The validated configuration.
    pub settings: UpstreamSettings,
    balancer: Balancer,
    ejections: Arc<Ejections>,
    ca: Option<Arc<[WrappedX509]>>,
    client_cert_key: Option<Arc<CertKey>>,
    /// Spreads requests without a consent over the hash ring.
    unkeyed: AtomicUsize,
}

impl Pool {
    fn new(settings: &UpstreamSettings) -> Pool {
        let ejections = Arc::new(Ejections::default());
        let ca =
            settings.tls.as_ref().and_then(|t| t.ca.as_ref()).map(|ders| {
                ders.iter().map(|der| WrappedX509::new(der.clone(), parse_x509)).collect::<Vec<_>>().into()
            });
        let client_cert_key = settings
            .tls
            .as_ref()
            .and_then(|t| t.client_identity.as_ref())
            .map(|(chain, key)| Arc::new(CertKey::new(chain.clone(), key.clone())));
        let mut pool = Pool {
            settings: settings.clone(),
            balancer: Balancer::RoundRobin(Arc::new(empty())),
            ejections,
            ca,
            client_cert_key,
            unkeyed: AtomicUsize::new(0),
        };
        let check = health::http_check(&pool);
        pool.balancer = match settings.balancing {
            Balancing::RoundRobin => Balancer::RoundRobin(Arc::new(balancer(settings, check))),
            Balancing::ConsentHash => Balancer::ConsentHash(Arc::new(balancer(settings, check))),
        };
        pool
    }

    fn health_checks(&self) -> Option<HealthChecks> {
        self.settings.health_check.as_ref()?;
        Some(match &self.balancer {
            Balancer::RoundRobin(lb) => HealthChecks::RoundRobin(self.settings.name.clone(), lb.clone()),
            Balancer::ConsentHash(lb) => HealthChecks::ConsentHash(self.settings.name.clone(), lb.clone()),
        })
    }

    /// A target for a request: healthy, not ejected and not in `avoid`, by the pool's
    /// balancing (`consent` is the hash key for `consent_hash`). When every target is out,
    /// one of them anyway (rather than refuse everything while a check catches up), unless
    /// `avoid` leaves none.
    pub fn select(&self, consent: Option<&str>, avoid: &[SocketAddr]) -> Option<SocketAddr> {
        let ejection = self.settings.ejection;
        let usable = |b: &Backend, healthy: bool| {
            let addr = b.addr.as_inet();
            healthy && addr.is_some_and(|a| !avoid.contains(a) && !self.ejections.is_out(a, ejection))
        };
        let anyway = |b: &Backend, _healthy: bool| b.addr.as_inet().is_some_and(|a| !avoid.contains(a));
        let chosen = match &self.balancer {
            Balancer::RoundRobin(lb) => {
                lb.select_with(b"", MAX_ITERATIONS, usable).or_else(|| lb.select_with(b"", MAX_ITERATIONS, anyway))
            }
            Balancer::ConsentHash(lb) => {
                let counter;
                let key = match consent {
                    Some(c) => c.as_bytes(),
                    None => {
                        counter = self.unkeyed.fetch_add(1, Ordering::Relaxed).to_le_bytes();
                        &counter[..]
                    }
                };
                lb.select_with(key, MAX_ITERATIONS, usable).or_else(|| lb.select_with(key, MAX_ITERATIONS, anyway))
            }
        };
        chosen.and_then(|b| b.addr.as_inet().copied())
    }

    /// Leaves `target` out of selections for `ejection` (or until a health check passes).
    pub fn eject(&self, target: SocketAddr) {
        tracing::warn!(upstream = %self.settings.name, %target, ejection_ms = self.settings.ejection.as_millis() as u64, "upstream target ejected after a failed connect");
        self.ejections.eject(target);
    }

    /// The peer to connect to `target`, its timeouts bounded by `remaining` of the total.
    pub fn peer(&self, target: SocketAddr, remaining: Duration) -> HttpPeer {
        self.peer_with(target, self.settings.connect_timeout.min(remaining), self.settings.read_timeout.min(remaining))
    }

    fn peer_with(&self, target: SocketAddr, connect: Duration, read: Duration) -> HttpPeer {
        let tls = self.settings.tls.as_ref();
        let sni = tls.map(|t| t.sni.clone()).unwrap_or_default();
        let mut peer = HttpPeer::new(target, tls.is_some(), sni);
        peer.options.connection_timeout = Some(connect);
        peer.options.total_connection_timeout = Some(connect);
        peer.options.read_timeout = Some(read);
        peer.options.write_timeout = Some(read);
        if let Some(t) = tls {
            peer.options.verify_cert = true;
            peer.options.verify_hostname = t.verify_hostname;
            peer.options.ca = self.ca.clone();
            peer.client_cert_key = self.client_cert_key.clone();
        }
        peer
    }
}

fn empty() -> LoadBalancer<RoundRobin> {
    LoadBalancer::try_from_iter(std::iter::empty::<SocketAddr>()).expect("no targets to resolve")
}

fn balancer<S>(
    settings: &UpstreamSettings,
    check: Option<Box<dyn pingora_load_balancing::health_check::HealthCheck + Send + Sync>>,
) -> LoadBalancer<S>
where
    S: pingora_load_balancing::selection::BackendSelection + 'static,
    S::Iter: pingora_load_balancing::selection::BackendIter,
{
    // Addresses are resolved already: this does no I/O.
    let mut lb = LoadBalancer::try_from_iter(settings.targets.iter().copied()).expect("resolved addresses");
    if let (Some(check), Some(hc)) = (check, settings.health_check.as_ref()) {
        lb.set_health_check(check);
        lb.health_check_frequency = Some(hc.interval);
        lb.parallel_health_check = true;
    }
    lb
}
