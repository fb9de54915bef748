//! Assembling the gateway from a configuration, and running it: under pingora's
//! [`Server`](pingora_core::server::Server) in production (signals, graceful shutdown,
//! upgrades), or as tasks on the current tokio runtime for tests and benchmarks.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::services::listening::Service as ListeningService;
use pingora_core::services::Service;
use pingora_proxy::{http_proxy_service_with_name, HttpProxy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminService, AdminState};
use crate::cache::{IntrospectionCache, ServerLink, ServerLinks};
use crate::client_identity::{install_crypto_provider, tls_settings, ClientVerifier, ServerCertificate};
use crate::config::GatewayConfig;
use crate::introspection::HttpIntrospector;
use crate::metrics::Metrics;
use crate::proxy::{Gateway, Live};
use crate::reload::{forwarding_settings, ReloadService, Reloader};
use crate::resilience::{CircuitBreaker, Guarded};

/// The services of one gateway, ready to start, and handles on its state.
pub struct GatewayServices {
    pub proxy: ListeningService<HttpProxy<Gateway>>,
    pub admin: Option<AdminService>,
    pub reloader: Arc<Reloader>,
    pub servers: Arc<ServerLinks>,
    pub metrics: Arc<Metrics>,
}

fn server_conf(config: &GatewayConfig) -> ServerConf {
    ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(config.server.graceful_shutdown_timeout.as_secs()),
        upgrade_sock: config.server.upgrade_socket.display().to_string(),
        ..ServerConf::default()
    }
}

/// The introspection path to each authorization server: client, call limit, breaker, cache.
fn server_links(config: &GatewayConfig, metrics: &Arc<Metrics>) -> Result<ServerLinks, String> {
    let mut links = ServerLinks::new();
    for server in &config.authorization_servers {
        let circuit = metrics.circuit_state.with_label_values(&[&server.name]);
        circuit.set(0);
        let breaker = Arc::new(CircuitBreaker::new(
            server.circuit_failure_threshold,
            server.circuit_open,
            Box::new(move |state| circuit.set(state as i64)),
        ));
        let client =
            HttpIntrospector::new(server).map_err(|e| format!("authorization server `{}`: {e}", server.name))?;
        let guarded = Guarded::new(client, server.max_concurrent_calls, server.timeout, breaker.clone());
        let cache = Arc::new(IntrospectionCache::new(&server.name, &config.cache, Arc::new(guarded), metrics.clone()));
        links.insert(
            server.name.clone(),
            ServerLink { name: server.name.clone(), cache, breaker, retry_after_seconds: server.retry_after.as_secs() },
        );
    }
    Ok(links)
}

/// Builds the proxy (with its TLS listener), the admin service and the reloader.
pub fn build(config: GatewayConfig) -> Result<GatewayServices, String> {
    // Before any TLS (the introspection clients included) is set up.
    install_crypto_provider(config.listener.tls_profile)?;
    let metrics = Arc::new(Metrics::new());
    let servers = Arc::new(server_links(&config, &metrics)?);
    let server_certificate = match &config.listener.tls {
        Some((cert, key)) => Some(Arc::new(ServerCertificate::load(cert, key)?)),
        None => None,
    };
    let client_verifier = Arc::new(ClientVerifier::load(&config.listener.client_ca, &config.listener.crls)?);
    let tls = match &server_certificate {
        Some(sc) => Some(tls_settings(&config.listener, sc.clone(), client_verifier.clone())?),
        None => None,
    };
    let conf = Arc::new(server_conf(&config));
    let admin = config.admin.as_ref().map(|a| {
        let state =
            AdminState { metrics: metrics.clone(), servers: servers.clone(), bearer_secret: a.bearer_secret.clone() };
        AdminService::new(a.address, Arc::new(state))
    });
    let address = config.listener.address.to_string();
    let live =
        Arc::new(ArcSwap::from_pointee(Live { settings: forwarding_settings(&config), policies: Default::default() }));
    let reloader = Arc::new(Reloader::new(
        &config,
        servers.clone(),
        live.clone(),
        server_certificate,
        client_verifier.clone(),
        metrics.clone(),
    ));
    crate::cache::set_consent_paths(&servers, &config.policies);
    live.store(Arc::new(Live { settings: forwarding_settings(&config), policies: config.policies }));
    let dpop = crate::dpop::DpopVerifier::new(&config.dpop);
    let gateway = Gateway::new(live, servers.clone(), client_verifier, dpop, metrics.clone());
    let mut proxy = http_proxy_service_with_name(&conf, gateway, "fapi-gateway");
    match tls {
        Some(tls) => proxy.add_tls_with_settings(&address, None, tls),
        // Behind a TLS-terminating proxy, on the bank's internal network.
        None => proxy.add_tcp(&address),
    }
    Ok(GatewayServices { proxy, admin, reloader, servers, metrics })
}

/// Runs the gateway under pingora's server until SIGTERM (graceful) or SIGINT (fast).
/// `upgrade` takes the listening sockets over from a running instance (see README).
pub fn run(config: GatewayConfig, upgrade: bool) -> Result<std::convert::Infallible, String> {
    let conf = server_conf(&config);
    let services = build(config)?;
    let opt = Opt { upgrade, ..Opt::default() };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    server.add_service(services.proxy);
    if let Some(admin) = services.admin {
        server.add_service(admin);
    }
    server.add_service(ReloadService(services.reloader));
    server.run_forever()
}

/// A gateway running on the current tokio runtime; stops when dropped.
pub struct RunningGateway {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub servers: Arc<ServerLinks>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
}

impl RunningGateway {
    /// Starts the services and waits until the listeners accept connections.
    pub async fn start(config: GatewayConfig) -> Result<RunningGateway, String> {
        let address = config.listener.address;
        let admin_address = config.admin.as_ref().map(|a| a.address);
        let services = build(config)?;
        let (shutdown, watch) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut proxy = services.proxy;
        let w = watch.clone();
        tasks.push(tokio::spawn(async move { proxy.start_service(None, w, 1).await }));
        if let Some(mut admin) = services.admin {
            let w = watch.clone();
            tasks.push(tokio::spawn(async move { admin.start_service(None, w, 1).await }));
        }
        tasks.push(tokio::spawn(services.reloader.clone().watch(watch.clone())));
        let running = RunningGateway {
            shutdown,
            tasks,
            servers: services.servers,
            metrics: services.metrics,
            reloader: services.reloader,
        };
        for addr in std::iter::once(address).chain(admin_address) {
            wait_for_listener(addr).await?;
        }
        Ok(running)
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
