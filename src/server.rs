//! Assembling the gateway from a configuration, and running it: under pingora's
//! [`Server`](pingora_core::server::Server) in production (signals, graceful shutdown,
//! upgrades), or as tasks on the current tokio runtime for tests and benchmarks.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::ServerConf;
use pingora_core::server::Server;
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;
use pingora_proxy::{http_proxy_service_with_name, HttpProxy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::AdminService;
use crate::cache::IntrospectionCache;
use crate::client_identity::{tls_settings, ServerCertificate};
use crate::config::GatewayConfig;
use crate::introspection::HttpIntrospector;
use crate::proxy::{ForwardingSettings, Gateway};

/// The services of one gateway, ready to start.
pub struct GatewayServices {
    pub proxy: ListeningService<HttpProxy<Gateway>>,
    pub admin: Option<AdminService>,
    pub cache: Arc<IntrospectionCache>,
}

fn server_conf(config: &GatewayConfig) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        ..ServerConf::default()
    }
}

/// Builds the proxy (with its TLS listener) and the admin service.
pub fn build(config: GatewayConfig) -> Result<GatewayServices, String> {
    let introspector = HttpIntrospector::new(&config.authorization_server)?;
    let cache = Arc::new(IntrospectionCache::new(
        &config.authorization_server.name,
        &config.cache,
        Arc::new(introspector),
    ));
    let settings = ForwardingSettings {
        identity_headers: config.identity_headers.clone(),
        forward_authorization: config.forward_authorization,
        retry_after_seconds: config.authorization_server.retry_after.as_secs(),
        upstream_connect_timeout: Duration::from_secs(2),
        upstream_read_timeout: Duration::from_secs(30),
    };
    let server_certificate = Arc::new(ServerCertificate::load(
        &config.listener.certificate,
        &config.listener.private_key,
    )?);
    let tls = tls_settings(&config.listener, server_certificate)?;
    let conf = Arc::new(server_conf(&config));
    let admin = config.admin_address.map(AdminService::new);
    let gateway = Gateway::new(
        Arc::new(ArcSwap::from_pointee(config.policies)),
        cache.clone(),
        settings,
    );
    let mut proxy = http_proxy_service_with_name(&conf, gateway, "fapi-gateway");
    proxy.add_tls_with_settings(&config.listener.address.to_string(), None, tls);
    Ok(GatewayServices {
        proxy,
        admin,
        cache,
    })
}

/// Runs the gateway under pingora's server until SIGTERM (graceful) or SIGINT (fast).
pub fn run(config: GatewayConfig) -> Result<std::convert::Infallible, String> {
    let conf = server_conf(&config);
    let services = build(config)?;
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    server.add_service(services.proxy);
    if let Some(admin) = services.admin {
        server.add_service(admin);
    }
    server.run_forever()
}

/// A gateway running on the current tokio runtime; stops when dropped.
pub struct RunningGateway {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub cache: Arc<IntrospectionCache>,
}

impl RunningGateway {
    /// Starts the services and waits until the listener accepts connections.
    pub async fn start(config: GatewayConfig) -> Result<RunningGateway, String> {
        let address = config.listener.address;
        let admin_address = config.admin_address;
        let services = build(config)?;
        let (shutdown, watch) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut proxy = services.proxy;
        let w = watch.clone();
        tasks.push(tokio::spawn(async move {
            proxy.start_service(None, w, 1).await
        }));
        if let Some(mut admin) = services.admin {
            let w = watch.clone();
            tasks.push(tokio::spawn(async move {
                admin.start_service(None, w, 1).await
            }));
        }
        let running = RunningGateway {
            shutdown,
            tasks,
            cache: services.cache,
        };
        for addr in std::iter::once(address).chain(admin_address) {
            wait_for_listener(addr).await?;
        }
        Ok(running)
    }

    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Waits (up to 10 s) until something accepts TCP connections at `addr`.
pub async fn wait_for_listener(addr: std::net::SocketAddr) -> Result<(), String> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listens on {addr} after 10 s"))
}
