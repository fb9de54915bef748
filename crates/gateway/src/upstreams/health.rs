//! Active HTTP health checks: pingora's `HttpHealthCheck` with the upstream's own peer
//! (TLS, CA, client certificate), run by the load balancer as a background service of the
//! pingora server (so it stops on shutdown). A passing check also ends a passive ejection.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_load_balancing::health_check::{HealthCheck, HttpHealthCheck};
use pingora_load_balancing::selection::{Consistent, RoundRobin};
use pingora_load_balancing::{Backend, LoadBalancer};

use super::{Ejections, Pool};

/// One pool's health checks, to run until shutdown.
pub enum HealthChecks {
    RoundRobin(String, Arc<LoadBalancer<RoundRobin>>),
    ConsentHash(String, Arc<LoadBalancer<Consistent>>),
}

impl HealthChecks {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        match self {
            HealthChecks::RoundRobin(n, _) | HealthChecks::ConsentHash(n, _) => n,
        }
    }

    /// Runs the checks every interval until `shutdown`.
    pub async fn run(&self, shutdown: ShutdownWatch) {
        match self {
            HealthChecks::RoundRobin(_, lb) => lb.start(shutdown).await,
            HealthChecks::ConsentHash(_, lb) => lb.start(shutdown).await,
        }
    }
}

#[async_trait]
impl BackgroundService for HealthChecks {
    async fn start(&self, shutdown: ShutdownWatch) {
        tracing::info!(upstream = self.name(), "upstream health checks started");
        self.run(shutdown).await;
    }
}

/// The upstream's check, if it has one configured.
pub(super) fn http_check(pool: &Pool) -> Option<Box<dyn HealthCheck + Send + Sync>> {
    let hc = pool.settings.health_check.as_ref()?;
    let tls = pool.settings.tls.as_ref();
    let host =
        hc.host.clone().or_else(|| tls.map(|t| t.sni.clone())).unwrap_or_else(|| pool.settings.targets[0].to_string());
    let mut check = HttpHealthCheck::new(&host, tls.is_some());
    // The same peer as requests use (TLS, CA, client certificate); the address is replaced
    // by each target's.
    check.peer_template = pool.peer_with(pool.settings.targets[0], hc.timeout, hc.timeout);
    let mut req = RequestHeader::build("GET", hc.path.as_bytes(), None).expect("validated path");
    req.insert_header("Host", &host).expect("validated host");
    req.insert_header("User-Agent", "fapi-gateway-health-check").expect("static value");
    check.req = req;
    check.consecutive_success = hc.healthy_threshold;
    check.consecutive_failure = hc.unhealthy_threshold;
    Some(Box::new(Readmitting {
        inner: check,
        ejections: pool.ejections.clone(),
        upstream: pool.settings.name.clone(),
    }))
}

/// A check whose pass also ends the target's passive ejection, and whose health changes
/// are logged.
struct Readmitting {
    inner: HttpHealthCheck,
    ejections: Arc<Ejections>,
    upstream: String,
}

#[async_trait]
impl HealthCheck for Readmitting {
    async fn check(&self, target: &Backend) -> Result<()> {
        let started = Instant::now();
        let result = self.inner.check(target).await;
        if let (Ok(()), Some(addr)) = (&result, target.addr.as_inet()) {
            self.ejections.readmit(*addr, started);
        }
        result
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if healthy {
            tracing::info!(upstream = %self.upstream, target = %target.addr, "upstream target healthy");
        } else {
            tracing::warn!(upstream = %self.upstream, target = %target.addr, "upstream target unhealthy: left out until its checks pass");
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        self.inner.health_threshold(success)
    }
}
