//! The one path every revocation takes, whatever announced it (admin endpoint, signal
//! receiver): evicted from the local caches of the servers it concerns.
//!
//! The fleet's feed (issue 13) publishes from here as well, so a revocation learnt at one
//! replica reaches the others.

use std::sync::Arc;

use fapi_enforcement::cache::ServerLinks;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::revocation::{Revocation, Revoked};

/// Applies revocations to the gateway's caches.
pub struct Revocations {
    servers: Arc<ServerLinks>,
    metrics: Arc<Metrics>,
}

impl Revocations {
    /// Over the caches of `servers`.
    pub fn new(servers: Arc<ServerLinks>, metrics: Arc<Metrics>) -> Revocations {
        Revocations { servers, metrics }
    }

    /// Evicts what `revocation` names; how many cached results were dropped. A revocation
    /// naming an unknown server evicts nothing.
    pub async fn apply(&self, revocation: Revocation) -> usize {
        let links: Vec<_> = match &revocation.server {
            Some(name) => self.servers.get(name).into_iter().collect(),
            None => self.servers.values().collect(),
        };
        let mut evicted = 0;
        let kind = match &revocation.revoked {
            Revoked::Consent(consent) => {
                for link in links {
                    evicted += link.cache.revoke_consent(consent).await;
                }
                "consent"
            }
            Revoked::Subject(subject) => {
                for link in links {
                    evicted += link.cache.revoke_subject(subject).await;
                }
                "subject"
            }
            Revoked::Token(key) => {
                for link in links {
                    evicted += usize::from(link.cache.revoke_key(*key).await);
                }
                "token"
            }
        };
        self.metrics.revocations.with_label_values(&[kind]).inc();
        evicted
    }
}
