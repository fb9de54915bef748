//! Assembling the gateway from a configuration, and running it: under pingora's
//! [`Server`](pingora_core::server::Server) in production (signals, graceful shutdown,
//! upgrades), or as tasks on the current tokio runtime for tests and benchmarks.
//!
//! Every listening socket is bound (or taken over from the running instance, with
//! `run --upgrade`) before anything starts or is announced, so a taken address ends the
//! start at once with `cannot listen on ADDRESS: address in use`.

use std::collections::HashSet;
use std::os::unix::io::FromRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{Fds, Server, ShutdownWatch};
use pingora_core::services::Service;
use pingora_proxy::HttpProxy;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{AdminService, AdminState};
use crate::cluster::{Cluster, ClusterService, Membership, Revocations};
use crate::connections::{self, Accepting, ConnectionTracker, DeadlineApp, HeadRead, ProxyListener};
use crate::error::GatewayError;
use crate::forward_auth::ForwardAuth;
use crate::proxy::Gateway;
use crate::reload::{ReloadService, Reloader};
use crate::telemetry::Telemetry;
use crate::upstreams::{HealthChecks, Upstreams};
use fapi_enforcement::cache::ServerLinks;
use fapi_enforcement::client_identity::{install_crypto_provider, tls_settings, ServerCertificate};
use fapi_enforcement::config::{ClientCertificateSource, ConnectionLimits, GatewayConfig, ListenerMode};
use fapi_enforcement::enforcer::Enforcer;
use fapi_enforcement::metrics::Metrics;

/// The proxy listener's application as pingora serves it: under connection deadlines.
pub type ProxyApp = DeadlineApp<ListenerApp>;

/// What the proxy listener serves: the proxy, or (mode `forward_auth`) the decision alone.
pub enum ListenerApp {
    Proxy(Arc<HttpProxy<Gateway>>),
    ForwardAuth(Arc<HttpProxy<ForwardAuth>>),
}

#[async_trait]
impl HttpServerApp for ListenerApp {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        match self.as_ref() {
            ListenerApp::Proxy(app) => app.process_new_http(session, shutdown).await,
            ListenerApp::ForwardAuth(app) => app.process_new_http(session, shutdown).await,
        }
    }

    fn h2_options(&self) -> Option<H2Options> {
        match self {
            ListenerApp::Proxy(app) => app.h2_options(),
            ListenerApp::ForwardAuth(app) => app.h2_options(),
        }
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        match self {
            ListenerApp::Proxy(app) => app.server_options(),
            ListenerApp::ForwardAuth(app) => app.server_options(),
        }
    }

    async fn http_cleanup(&self) {
        match self {
            ListenerApp::Proxy(app) => app.http_cleanup().await,
            ListenerApp::ForwardAuth(app) => app.http_cleanup().await,
        }
    }
}

/// Serves `inner` under pingora's HTTP machinery with the gateway's modules and options.
fn http_app<SV>(inner: SV, conf: Arc<ServerConf>, limits: &ConnectionLimits) -> Arc<HttpProxy<SV>>
where
    SV: pingora_proxy::ProxyHttp,
{
    let mut http = HttpProxy::new(inner, conf);
    http.handle_init_modules();
    http.downstream_modules.add_module(Box::new(HeadRead));
    http.server_options = Some(connections::server_options(limits));
    Arc::new(http)
}

/// The services of one gateway, ready to start, and handles on its state.
pub struct GatewayServices {
    pub proxy: ProxyListener<ProxyApp>,
    pub admin: Option<AdminService>,
    pub reloader: Arc<Reloader>,
    pub servers: Arc<ServerLinks>,
    pub metrics: Arc<Metrics>,
    pub connections: Arc<ConnectionTracker>,
    /// Whether the proxy listener accepts connections (`/readyz`).
    pub accepting: Accepting,
    /// The one place revocations are applied.
    pub revocations: Arc<Revocations>,
    /// The fleet's feed, with `[cluster]`.
    pub cluster: Option<Arc<Cluster>>,
    /// The upstreams' active health checks, to run beside the listeners.
    pub health_checks: Vec<HealthChecks>,
}

/// The gateway's listening sockets, bound before anything starts.
pub struct BoundListeners {
    proxy: std::net::TcpListener,
    /// `None` only in an upgrade whose old process kept the admin socket to itself.
    admin: Option<std::net::TcpListener>,
}

/// Binds the proxy and admin listeners of `config`, or takes them from `inherited` (the
/// sockets a running instance handed over for `run --upgrade`).
pub fn bind_listeners(config: &GatewayConfig, inherited: Option<&Fds>) -> Result<BoundListeners, GatewayError> {
    let proxy_addr = config.listener.address;
    let admin_addr = config.admin.as_ref().map(|a| a.address);
    if admin_addr == Some(proxy_addr) {
        return Err(GatewayError::Listen {
            address: proxy_addr,
            reason: "listener.address and admin.address are the same".into(),
        });
    }
    let take = |addr: std::net::SocketAddr| -> Option<std::net::TcpListener> {
        let fds = inherited?;
        let fd = *fds.get(&addr.to_string())?;
        // SAFETY: the descriptor came over the upgrade socket and is owned by nobody else
        // in this process (`Fds` only records its number).
        Some(unsafe { std::net::TcpListener::from_raw_fd(fd) })
    };
    let upgrading = inherited.is_some();
    let proxy = match take(proxy_addr) {
        Some(l) => l,
        None => connections::bind_listener(proxy_addr)?,
    };
    let admin = match admin_addr {
        None => None,
        Some(addr) => match take(addr) {
            Some(l) => Some(l),
            // The old process may hold it until it exits: the admin service binds it then.
            None if upgrading => connections::bind_listener(addr).ok(),
            None => Some(connections::bind_listener(addr)?),
        },
    };
    Ok(BoundListeners { proxy, admin })
}

/// Receives the listening sockets of the running instance (it sends them on SIGQUIT),
/// closing those this configuration does not listen on.
fn take_over(socket: &Path, config: &GatewayConfig) -> Result<Fds, GatewayError> {
    let path = socket
        .to_str()
        .ok_or_else(|| GatewayError::Upgrade(format!("upgrade socket {} is not UTF-8", socket.display())))?;
    tracing::info!(socket = path, "waiting for the running instance's listening sockets (send it SIGQUIT)");
    let mut fds = Fds::new();
    fds.get_from_sock(path)
        .map_err(|e| GatewayError::Upgrade(format!("cannot take the listening sockets over at {path}: {e}")))?;
    let keep: HashSet<String> = std::iter::once(config.listener.address)
        .chain(config.admin.as_ref().map(|a| a.address))
        .map(|a| a.to_string())
        .collect();
    let closed = fds.close_unclaimed(&keep);
    if !closed.is_empty() {
        tracing::warn!(?closed, "closed inherited listening sockets this configuration does not use");
    }
    Ok(fds)
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

/// Builds the proxy (on its bound listener), the admin service and the reloader.
pub fn build(mut config: GatewayConfig, listeners: BoundListeners) -> Result<GatewayServices, GatewayError> {
    // Before any TLS (the introspection clients included) is set up.
    install_crypto_provider(config.listener.tls_profile)?;
    let metrics = Arc::new(Metrics::new());
    let membership = match &config.cluster {
        Some(c) => Some(Membership::prepare(c, &config.cache)?),
        None => None,
    };
    let enforcer = match &membership {
        Some(m) => Enforcer::from_config_wrapped(&mut config, &metrics, &|server, client| m.wrap(server, client))?,
        None => Enforcer::from_config(&mut config, &metrics)?,
    };
    let enforcer = Arc::new(match membership.as_ref().and_then(Membership::fleet_limiter) {
        Some(fleet) => enforcer.with_fleet_limiter(fleet),
        None => enforcer,
    });
    let servers = enforcer.servers().clone();
    let server_certificate = match &config.listener.tls {
        Some((cert, key)) => Some(Arc::new(ServerCertificate::load(cert, key)?)),
        None => None,
    };
    let client_verifier = enforcer.client_verifier().clone();
    let tls = match &server_certificate {
        Some(sc) => Some(tls_settings(&config.listener, sc.clone(), client_verifier.clone())?),
        None => None,
    };
    let conf = Arc::new(server_conf(&config));
    let accepting: Accepting = Arc::new(AtomicBool::new(false));
    let cluster = match membership {
        Some(m) => Some(m.join(servers.clone(), &metrics)?),
        None => None,
    };
    let revocations = match &cluster {
        Some(c) => c.revocations().clone(),
        None => Revocations::local(servers.clone(), metrics.clone()),
    };
    let admin_listener = listeners.admin;
    let signals = match &config.signals {
        Some(s) => Some(Arc::new(fapi_enforcement::signals::SignalReceiver::new(s).map_err(|reason| {
            fapi_enforcement::error::StartError::File {
                path: config.source.clone(),
                reason: format!("[signals]: {reason}"),
            }
        })?)),
        None => None,
    };
    let admin = config.admin.as_ref().map(|a| {
        let state = AdminState {
            revocations: revocations.clone(),
            signals: signals.clone(),
            metrics: metrics.clone(),
            servers: servers.clone(),
            bearer_secret: a.bearer_secret.clone(),
            accepting: accepting.clone(),
            readiness: a.readiness,
            live: enforcer.live_cell().clone(),
        };
        AdminService::new(a.address, admin_listener, Arc::new(state))
    });
    // Behind a load balancer, its addresses carry everyone's connections.
    let exempt = match &config.listener.client_certificates {
        ClientCertificateSource::ProxyHeader { trusted, .. } => trusted.clone(),
        ClientCertificateSource::Handshake => Vec::new(),
    };
    let connections = ConnectionTracker::new(&config.connections, exempt, metrics.clone());
    let limits = config.connections.clone();
    let reloader = Arc::new(Reloader::new(
        &config,
        servers.clone(),
        enforcer.live_cell().clone(),
        server_certificate,
        client_verifier,
        metrics.clone(),
    ));
    let mut health_checks = Vec::new();
    let app = if config.listener.mode == ListenerMode::ForwardAuth {
        ListenerApp::ForwardAuth(http_app(ForwardAuth::new(enforcer, metrics.clone()), conf, &limits))
    } else {
        let upstreams = Upstreams::new(&config.upstream_settings);
        health_checks = upstreams.health_checks();
        let telemetry = config.tracing.as_ref().map(Telemetry::start).transpose()?.map(Arc::new);
        let gateway = Gateway::new(enforcer, metrics.clone(), Arc::new(upstreams)).with_telemetry(telemetry);
        ListenerApp::Proxy(http_app(gateway, conf, &limits))
    };
    // `tls` is absent behind a TLS-terminating proxy, on the bank's internal network.
    let proxy = ProxyListener::new(
        "fapi-gateway",
        listeners.proxy,
        tls,
        DeadlineApp::new(app, &limits),
        connections.clone(),
        accepting.clone(),
    )?;
    Ok(GatewayServices {
        proxy,
        admin,
        reloader,
        servers,
        metrics,
        connections,
        accepting,
        revocations,
        cluster,
        health_checks,
    })
}

/// A gateway with its listeners bound, ready to run.
pub struct Prepared {
    server: Server,
}

/// Raises the open-files limit, binds the listeners (or, with `upgrade`, takes them over
/// from the running instance: see README) and builds the services.
pub fn prepare(config: GatewayConfig, upgrade: bool) -> Result<Prepared, GatewayError> {
    let open_files = connections::raise_open_files_limit();
    tracing::info!(open_files, "open-files limit");
    let inherited = if upgrade { Some(take_over(&config.server.upgrade_socket, &config)?) } else { None };
    let listeners = bind_listeners(&config, inherited.as_ref())?;
    let conf = server_conf(&config);
    let apis = config.policies.apis();
    tracing::info!(
        config = %config.source.display(),
        apis = apis.len(),
        routes = apis.iter().map(|a| a.routes.len()).sum::<usize>(),
        authorization_servers = config.authorization_servers.len(),
        mode = ?config.listener.mode,
        "configuration loaded"
    );
    let services = build(config, listeners)?;
    // The sockets were taken over above: pingora's own bootstrap has nothing to wait for.
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    server.add_service(services.proxy);
    if let Some(admin) = services.admin {
        server.add_service(admin);
    }
    server.add_service(ReloadService(services.reloader));
    if let Some(cluster) = services.cluster {
        server.add_service(ClusterService(cluster));
    }
    for checks in services.health_checks {
        let name = format!("upstream {} health checks", checks.name());
        server.add_service(pingora_core::services::background::background_service(&name, checks));
    }
    Ok(Prepared { server })
}

impl Prepared {
    /// Runs until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (hand the listeners over).
    pub fn run(self) -> ! {
        self.server.run_forever()
    }
}

/// Runs the gateway under pingora's server until SIGTERM (graceful) or SIGINT (fast).
/// `upgrade` takes the listening sockets over from a running instance (see README).
pub fn run(config: GatewayConfig, upgrade: bool) -> Result<std::convert::Infallible, GatewayError> {
    prepare(config, upgrade)?.run()
}

/// A gateway running on the current tokio runtime; stops when dropped.
pub struct RunningGateway {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    pub servers: Arc<ServerLinks>,
    pub metrics: Arc<Metrics>,
    pub reloader: Arc<Reloader>,
    pub connections: Arc<ConnectionTracker>,
    /// The one place revocations are applied (locally, and to the fleet with `[cluster]`).
    pub revocations: Arc<Revocations>,
}

impl RunningGateway {
    /// Binds the listeners (an error at once if an address is taken), starts the services
    /// and waits until the proxy listener accepts connections.
    pub async fn start(config: GatewayConfig) -> Result<RunningGateway, GatewayError> {
        let listeners = bind_listeners(&config, None)?;
        let services = build(config, listeners)?;
        let accepting = services.accepting.clone();
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
        if let Some(cluster) = &services.cluster {
            tasks.push(tokio::spawn(cluster.clone().run(watch.clone())));
        }
        for checks in services.health_checks {
            let w = watch.clone();
            tasks.push(tokio::spawn(async move { checks.run(w).await }));
        }
        let running = RunningGateway {
            shutdown,
            tasks,
            servers: services.servers,
            metrics: services.metrics,
            reloader: services.reloader,
            connections: services.connections,
            revocations: services.revocations,
        };
        for _ in 0..200 {
            if accepting.load(Ordering::SeqCst) {
                return Ok(running);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(GatewayError::NotAccepting(Duration::from_secs(10)))
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
