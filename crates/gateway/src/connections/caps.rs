//! Caps on open connections, in all and per client address, counted at accept.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use fapi_enforcement::config::{Cidr, ConnectionLimits};
use fapi_enforcement::metrics::Metrics;

use super::*;

/// Why a connection was closed at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    MaxConnections,
    PerClient,
}

impl Refused {
    pub fn label(self) -> &'static str {
        match self {
            Refused::MaxConnections => "max_connections",
            Refused::PerClient => "per_ip",
        }
    }
}

/// Counts open downstream connections, in all and per client address.
pub struct ConnectionTracker {
    limits: ConnectionLimits,
    max_connections: usize,
    /// Trusted proxies: all their clients share their address.
    exempt: Vec<Cidr>,
    open: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    pub(super) metrics: Arc<Metrics>,
}

impl ConnectionTracker {
    pub fn new(limits: &ConnectionLimits, exempt: Vec<Cidr>, metrics: Arc<Metrics>) -> Arc<ConnectionTracker> {
        let max_connections =
            limits.max_connections.unwrap_or_else(|| derived_max_connections(open_files_limit().unwrap_or(1024)));
        metrics.connections_max.set(max_connections as i64);
        for reason in [Refused::MaxConnections, Refused::PerClient] {
            metrics.connections_refused.with_label_values(&[reason.label()]);
        }
        for phase in ["handshake", "request_head", "idle"] {
            metrics.connection_timeouts.with_label_values(&[phase]);
        }
        Arc::new(ConnectionTracker {
            limits: limits.clone(),
            max_connections,
            exempt,
            open: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    pub fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub(super) fn per_client(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_client.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `peer`, or says why not (and counts it).
    pub fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<Permit, Refused> {
        let key = peer.filter(|ip| !self.exempt.iter().any(|c| c.contains(*ip))).map(client_key);
        if let Some(key) = key {
            let mut counts = self.per_client();
            let n = counts.entry(key).or_insert(0);
            if *n >= self.limits.max_connections_per_ip {
                return Err(self.refuse(Refused::PerClient));
            }
            *n += 1;
        }
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            if let Some(key) = key {
                self.release_client(key);
            }
            return Err(self.refuse(Refused::MaxConnections));
        }
        self.metrics.connections_open.inc();
        Ok(Permit { tracker: self.clone(), key })
    }

    fn refuse(&self, reason: Refused) -> Refused {
        self.metrics.connections_refused.with_label_values(&[reason.label()]).inc();
        reason
    }

    fn release_client(&self, key: IpAddr) {
        let mut counts = self.per_client();
        if let Some(n) = counts.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// What one client address counts as: an IPv4 address (also when mapped into IPv6), or
/// an IPv6 /64 (one subscriber's prefix: a host chooses freely within it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
        v4 => v4,
    }
}

/// One admitted connection; dropping it gives its place back.
pub struct Permit {
    pub(super) tracker: Arc<ConnectionTracker>,
    key: Option<IpAddr>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::AcqRel);
        self.tracker.metrics.connections_open.dec();
        if let Some(key) = self.key {
            self.tracker.release_client(key);
        }
    }
}
