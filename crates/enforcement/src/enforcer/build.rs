//! An [`Enforcer`] from a configuration: per authorization server an introspection
//! client behind a call limit and a circuit breaker, and a cache in front; the
//! client-certificate and DPoP verifiers; the policies.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Enforcer, ForwardingSettings, Live};
use crate::cache::{set_consent_paths, IntrospectionCache, ServerLink, ServerLinks};
use crate::client_identity::ClientVerifier;
use crate::config::GatewayConfig;
use crate::dpop::DpopVerifier;
use crate::error::StartError;
use crate::introspection::{HttpIntrospector, Introspector};
use crate::metrics::Metrics;
use crate::resilience::{CircuitBreaker, Guarded};

impl ForwardingSettings {
    /// The forwarding settings of a configuration.
    pub fn of(config: &GatewayConfig) -> ForwardingSettings {
        ForwardingSettings {
            identity_headers: config.identity_headers.clone(),
            forward_authorization: config.forward_authorization,
            client_certificates: config.listener.client_certificates.clone(),
            limits: config.limits,
            server_names: config.listener.server_names.clone(),
            upstream_connect_timeout: config.upstream_connect_timeout,
            upstream_read_timeout: config.upstream_read_timeout,
            grant_jwt: config.grant_jwt.clone(),
            grant_jwt_headers: crate::grant_jwt::header_names(&config.policies),
        }
    }
}

/// Puts something between a server's cache and its guarded client (the fleet's shared
/// cache): given the server's name and the guarded client, the introspector the cache asks.
pub type WrapIntrospector<'a> = &'a dyn Fn(&str, Arc<dyn Introspector>) -> Arc<dyn Introspector>;

/// The introspection path to each authorization server: client, call limit, breaker, cache.
pub fn server_links(config: &GatewayConfig, metrics: &Arc<Metrics>) -> Result<ServerLinks, StartError> {
    server_links_wrapped(config, metrics, &|_, client| client)
}

/// As [`server_links`], each guarded client wrapped by `wrap`.
pub fn server_links_wrapped(
    config: &GatewayConfig,
    metrics: &Arc<Metrics>,
    wrap: WrapIntrospector<'_>,
) -> Result<ServerLinks, StartError> {
    let mut links = ServerLinks::new();
    for server in &config.authorization_servers {
        let circuit = metrics.circuit_state.with_label_values(&[&server.name]);
        circuit.set(0);
        let breaker = Arc::new(
            CircuitBreaker::new(
                server.circuit_failure_threshold,
                server.circuit_open,
                Box::new(move |state| circuit.set(state as i64)),
            )
            .named(&server.name),
        );
        let client = HttpIntrospector::new(server)?;
        let guarded = Guarded::new(client, server.max_concurrent_calls, server.timeout, breaker.clone());
        let client = wrap(&server.name, Arc::new(guarded));
        let cache = Arc::new(IntrospectionCache::new(&server.name, &config.cache, client, metrics.clone()));
        links.insert(
            server.name.clone(),
            ServerLink { name: server.name.clone(), cache, breaker, retry_after_seconds: server.retry_after.as_secs() },
        );
    }
    Ok(links)
}

impl Enforcer {
    /// Builds the enforcer of `config`, moving its policies in (they are `config`'s no
    /// more). Install the process's TLS provider first
    /// ([`install_crypto_provider`](crate::install_crypto_provider)): the introspection
    /// clients are TLS clients.
    pub fn from_config(config: &mut GatewayConfig, metrics: &Arc<Metrics>) -> Result<Enforcer, StartError> {
        Self::from_config_wrapped(config, metrics, &|_, client| client)
    }

    /// As [`Enforcer::from_config`], each server's guarded client wrapped by `wrap`
    /// before its cache (the fleet's shared cache goes there).
    pub fn from_config_wrapped(
        config: &mut GatewayConfig,
        metrics: &Arc<Metrics>,
        wrap: WrapIntrospector<'_>,
    ) -> Result<Enforcer, StartError> {
        let servers = Arc::new(server_links_wrapped(config, metrics, wrap)?);
        let client_verifier = Arc::new(ClientVerifier::load(&config.listener.client_ca, &config.listener.crls)?);
        let settings = ForwardingSettings::of(config);
        let policies = std::mem::take(&mut config.policies);
        set_consent_paths(&servers, &policies);
        let live = Arc::new(ArcSwap::from_pointee(Live { settings, policies }));
        Ok(Enforcer::new(live, servers, client_verifier, DpopVerifier::new(&config.dpop)))
    }

    /// The introspection path to each authorization server (its cache takes revocations).
    pub fn servers(&self) -> &Arc<ServerLinks> {
        &self.servers
    }

    /// The live configuration, which a host swaps whole on reload.
    pub fn live_cell(&self) -> &Arc<ArcSwap<Live>> {
        &self.live
    }

    /// The verifier of certificates from a trusted proxy's headers (reloadable CA and CRLs).
    pub fn client_verifier(&self) -> &Arc<ClientVerifier> {
        &self.client_verifier
    }
}
