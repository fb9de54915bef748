//! Embedding fapi-gateway's enforcement in a pingora proxy of your own.
//!
//! The proxy below is all a bank adds to its own `ProxyHttp`: ask the [`Enforcer`] in
//! `request_filter`, answer a refusal as the library writes it, and on a grant forward to
//! the grant's upstream with the library's [`apply_grant`]. Everything else (its own
//! routing, load balancing, logging) stays the bank's.
//!
//! ```sh
//! cargo run --release -- demo              # the mock authorization server and banks (and the gateway on 8443)
//! cargo run --example embedding -- gateway.toml 127.0.0.1:8444
//! ```
//!
//! then call `https://127.0.0.1:8444/gobank/accounts` as the README's walk-through calls 8443.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::RequestHeader;
use pingora_proxy::{http_proxy_service, HttpProxy, ProxyHttp, Session};

use fapi_enforcement::client_identity::{install_crypto_provider, tls_settings, ServerCertificate};
use fapi_enforcement::config::GatewayConfig;
use fapi_enforcement::enforcer::forward::apply_grant;
use fapi_enforcement::enforcer::pingora::{decide, write_refusal};
use fapi_enforcement::enforcer::{interaction_id, Enforcer, Trace};
use fapi_enforcement::error::StartError;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::Grant;

/// The bank's own proxy, with the enforcer in front of everything it forwards.
pub struct BankProxy {
    enforcer: Arc<Enforcer>,
}

/// Per request: the interaction id, and what the decision found.
pub struct RequestState {
    interaction_id: String,
    grant: Option<Grant>,
    trace: Trace,
}

#[async_trait]
impl ProxyHttp for BankProxy {
    type CTX = RequestState;

    fn new_ctx(&self) -> RequestState {
        RequestState { interaction_id: String::new(), grant: None, trace: Trace::default() }
    }

    /// Decide first: a refusal is answered here (status, challenge, Open Banking body).
    async fn request_filter(&self, session: &mut Session, state: &mut RequestState) -> Result<bool> {
        let (id, malformed_id) = interaction_id(session.req_header());
        state.interaction_id = id;
        let decision = match malformed_id {
            Some(refusal) => Err(refusal),
            None => decide(&self.enforcer, session, &mut state.trace).await,
        };
        match decision {
            Ok(grant) => {
                state.grant = Some(grant);
                Ok(false)
            }
            Err(refusal) => {
                write_refusal(session, &refusal, &state.interaction_id).await?;
                Ok(true)
            }
        }
    }

    /// The grant names the bank's backend for the matched API.
    async fn upstream_peer(&self, _session: &mut Session, state: &mut RequestState) -> Result<Box<HttpPeer>> {
        let grant = state.grant.as_ref().expect("request_filter let only grants through");
        Ok(Box::new(HttpPeer::new(grant.upstream, false, String::new())))
    }

    /// The bank receives the path without the API's prefix and the identity headers.
    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        state: &mut RequestState,
    ) -> Result<()> {
        let grant = state.grant.as_ref().expect("request_filter let only grants through");
        let live = state.trace.live.as_ref().expect("set by the decision");
        apply_grant(upstream, grant, &live.settings, &state.interaction_id)
    }
}

/// The proxy service of `config`: its mutual-TLS listener and the enforcer.
pub fn proxy_service(mut config: GatewayConfig) -> std::result::Result<Service<HttpProxy<BankProxy>>, StartError> {
    install_crypto_provider(config.listener.tls_profile)?;
    let metrics = Arc::new(Metrics::new());
    let enforcer = Arc::new(Enforcer::from_config(&mut config, &metrics)?);
    let (cert, key) = config
        .listener
        .tls
        .as_ref()
        .ok_or_else(|| StartError::Tls("the example terminates TLS itself: give listener.certificate".into()))?;
    let certificate = Arc::new(ServerCertificate::load(cert, key)?);
    let tls = tls_settings(&config.listener, certificate, enforcer.client_verifier().clone())?;
    let mut service = http_proxy_service(&Arc::new(ServerConf::default()), BankProxy { enforcer });
    service.add_tls_with_settings(&config.listener.address.to_string(), None, tls);
    Ok(service)
}

fn main() -> std::result::Result<(), String> {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "gateway.toml".into());
    let mut config = GatewayConfig::load(path.as_ref()).map_err(|e| e.to_string())?;
    if let Some(address) = args.next() {
        config.listener.address = address.parse().map_err(|e| format!("{address}: {e}"))?;
    }
    // pingora would drain for 300 s on SIGTERM by default.
    let conf =
        ServerConf { grace_period_seconds: Some(5), graceful_shutdown_timeout_seconds: Some(5), ..Default::default() };
    let mut server = Server::new_with_opt_and_conf(pingora_core::server::configuration::Opt::default(), conf);
    server.bootstrap();
    server.add_service(proxy_service(config).map_err(|e| e.to_string())?);
    server.run_forever()
}
