//! The benchmark's pingora floor: the embedding example (`examples/embedding.rs`) with the
//! enforcement taken out. The same pingora `Server`, the same rustls mutual-TLS listener
//! (the library's `tls_settings`: our certificate, client certificates verified against
//! the CA) and the same plain-HTTP upstream peer; every request goes to one bank, as is.
//! What fapi-gateway costs on top of pingora is measured against this process.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_proxy::{http_proxy_service, ProxyHttp, Session};

use fapi_enforcement::client_identity::{install_crypto_provider, tls_settings, ClientVerifier, ServerCertificate};
use fapi_enforcement::config::GatewayConfig;

/// Forwards everything to `upstream`.
pub struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

/// Runs the bare proxy with the listener and threads of the gateway configuration at
/// `config` (its policies and authorization servers are not used) until the process ends.
pub fn run(config: &Path, upstream: SocketAddr) -> Result<(), String> {
    let config = GatewayConfig::load(config).map_err(|e| e.to_string())?;
    install_crypto_provider(config.listener.tls_profile).map_err(|e| e.to_string())?;
    let (cert, key) = config.listener.tls.as_ref().ok_or("the bare proxy terminates TLS: give listener.certificate")?;
    let certificate = Arc::new(ServerCertificate::load(cert, key).map_err(|e| e.to_string())?);
    let verifier =
        Arc::new(ClientVerifier::load(&config.listener.client_ca, &config.listener.crls).map_err(|e| e.to_string())?);
    let tls = tls_settings(&config.listener, certificate, verifier).map_err(|e| e.to_string())?;
    let conf = || ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..Default::default()
    };
    let mut service = http_proxy_service(&Arc::new(conf()), BareProxy { upstream });
    service.add_tls_with_settings(&config.listener.address.to_string(), None, tls);
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf());
    server.bootstrap();
    server.add_service(service);
    server.run_forever()
}
