//! Downstream connections: how many, from whom, and for how long (`[connections]`).
//!
//! The proxy listener runs its own accept loop, [`ProxyListener`], instead of pingora's
//! (which gives every handshake 60 s and has no caps). Each connection, in order:
//!
//! 1. at accept, before any TLS: the cap on open connections and the per-client cap
//!    ([`ConnectionTracker::admit`]); a refused connection is closed at once. The
//!    [`Permit`] admitting it lives in the connection's task, so the counts go down however
//!    the connection ends (handshake failure or deadline, error, panic, close);
//! 2. the TLS handshake, within `handshake_timeout`;
//! 3. then [`Watched`] holds its reads to deadlines that pingora's per-read timeouts do not
//!    give: the request head complete within `request_head_timeout` (counted from the end
//!    of the handshake for the first request, from their first byte for the next ones),
//!    the next HTTP/1.1 request begun within `idle_timeout` of the previous response, and
//!    for HTTP/2 the client preface within `request_head_timeout` (after which pingora
//!    closes the connection once no stream has been open for `idle_timeout`).
//!
//! A request head is complete when pingora hands it to the proxy's modules ([`HeadRead`]).
//! The module reaches the connection's state through a task-local: pingora serves an
//! HTTP/1 connection's requests on the task that accepted it.

use crate::error::GatewayError;
use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::unix::io::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp};
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::listener::Listener as L4Listener;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;
use pingora_http::RequestHeader;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use fapi_enforcement::config::{Cidr, ConnectionLimits};
use fapi_enforcement::metrics::Metrics;

// ---- the open-files limit ---------------------------------------------------------------

/// Raises the soft limit on open files to the hard limit where allowed; returns the limit
/// then in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot read the open-files limit");
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                error = %io::Error::last_os_error(),
                "cannot raise the open-files limit to the hard limit"
            );
        }
    }
    limit.rlim_cur
}

/// The soft limit on open files, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Descriptors kept for everything but downstream connections: connections to the banks
/// and the authorization servers beyond one per request, the admin listener, files.
const RESERVED_FILES: u64 = 256;

/// `connections.max_connections` when not configured: half of what the open-files limit
/// leaves after [`RESERVED_FILES`] (a downstream connection with a request in flight holds
/// a second descriptor, to the bank), at least 64 and at most 10 000.
pub fn derived_max_connections(open_files: u64) -> usize {
    (open_files.saturating_sub(RESERVED_FILES) / 2).clamp(64, 10_000) as usize
}

// ---- listening sockets ------------------------------------------------------------------

/// Binds a listening socket now (with `SO_REUSEADDR` and pingora's backlog), so that a
/// taken address fails the start instead of a retry loop in the background.
pub fn bind_listener(address: SocketAddr) -> Result<std::net::TcpListener, GatewayError> {
    let listener = std::net::TcpListener::bind(address).map_err(|e| listen_error(address, &e))?;
    // SAFETY: listen(2) on a socket this function owns; on a listening socket it only
    // changes the backlog (the kernel caps it at somaxconn).
    unsafe { libc::listen(listener.as_raw_fd(), 65535) };
    Ok(listener)
}

/// `cannot listen on 127.0.0.1:8443: address in use`.
pub fn listen_error(address: SocketAddr, e: &io::Error) -> GatewayError {
    let reason = match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    GatewayError::Listen { address, reason }
}

/// Whether the proxy listener is accepting connections (`/readyz`).
pub type Accepting = Arc<AtomicBool>;

// ---- caps ---------------------------------------------------------------------------------

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
    metrics: Arc<Metrics>,
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

    fn per_client(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
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
    tracker: Arc<ConnectionTracker>,
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

// ---- deadlines ----------------------------------------------------------------------------

/// Where a connection is between requests, and its deadline there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading a request head, complete by then.
    Head(Instant),
    /// HTTP/1.1 keep-alive: waiting for the next request's first byte.
    Idle(Instant),
    /// HTTP/2: the client preface (`remaining` bytes of it) by then.
    Preface { deadline: Instant, remaining: usize },
    /// A request is being served (pingora's read timeouts apply), or HTTP/2 past its preface.
    Open,
    /// A deadline passed: every read fails.
    Expired,
}

/// The deadline state of one connection, shared by its stream and its request modules.
struct ConnectionState {
    phase: Mutex<Phase>,
    /// HTTP/1 request cycles begun on this connection.
    requests: AtomicUsize,
    head_timeout: Duration,
    idle_timeout: Duration,
    peer: Option<SocketAddr>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ConnectionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionState").field("phase", &*self.phase()).field("peer", &self.peer).finish()
    }
}

/// The HTTP/2 client preface: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const H2_PREFACE_LEN: usize = 24;

impl ConnectionState {
    fn new(limits: &ConnectionLimits, http2: bool, peer: Option<SocketAddr>, metrics: Arc<Metrics>) -> Self {
        let deadline = Instant::now() + limits.request_head_timeout;
        let phase = if http2 { Phase::Preface { deadline, remaining: H2_PREFACE_LEN } } else { Phase::Head(deadline) };
        ConnectionState {
            phase: Mutex::new(phase),
            requests: AtomicUsize::new(0),
            head_timeout: limits.request_head_timeout,
            idle_timeout: limits.idle_timeout,
            peer,
            metrics,
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline reads are held to now, and what it bounds.
    fn deadline(&self) -> Option<(Instant, &'static str)> {
        match *self.phase() {
            Phase::Head(d) | Phase::Preface { deadline: d, .. } => Some((d, "request_head")),
            Phase::Idle(d) => Some((d, "idle")),
            Phase::Open | Phase::Expired => None,
        }
    }

    fn expired(&self) -> bool {
        *self.phase() == Phase::Expired
    }

    /// `n` bytes were read.
    fn read(&self, n: usize) {
        let mut phase = self.phase();
        match *phase {
            Phase::Idle(_) if n > 0 => *phase = Phase::Head(Instant::now() + self.head_timeout),
            Phase::Preface { deadline, remaining } => {
                let remaining = remaining.saturating_sub(n);
                *phase = if remaining == 0 { Phase::Open } else { Phase::Preface { deadline, remaining } };
            }
            _ => {}
        }
    }

    /// The deadline of `what` passed with a read waiting.
    fn expire(&self, what: &'static str) {
        let mut phase = self.phase();
        if *phase != Phase::Expired {
            *phase = Phase::Expired;
            self.metrics.connection_timeouts.with_label_values(&[what]).inc();
            tracing::debug!(peer = ?self.peer, deadline = what, "closing a connection at its deadline");
        }
    }

    /// HTTP/1: pingora starts reading a request on this connection.
    fn request_cycle(&self) {
        if self.requests.fetch_add(1, Ordering::AcqRel) > 0 {
            let mut phase = self.phase();
            if *phase != Phase::Expired {
                *phase = Phase::Idle(Instant::now() + self.idle_timeout);
            }
        }
    }

    /// HTTP/1: the request head is complete.
    fn head_complete(&self) {
        let mut phase = self.phase();
        if *phase != Phase::Expired {
            *phase = Phase::Open;
        }
    }
}

tokio::task_local! {
    /// The connection the current task serves (HTTP/1).
    static CONNECTION: Arc<ConnectionState>;
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} deadline passed"))
}

/// A downstream stream whose reads are held to its connection's deadlines.
pub struct Watched {
    inner: Stream,
    state: Arc<ConnectionState>,
    timer: Pin<Box<Sleep>>,
}

impl Watched {
    fn new(inner: Stream, state: Arc<ConnectionState>) -> Watched {
        let far = Instant::now() + Duration::from_secs(86_400);
        Watched { inner, state, timer: Box::pin(tokio::time::sleep_until(far)) }
    }
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched").field("inner", &self.inner).field("state", &self.state).finish()
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.state.expired() {
            return Poll::Ready(Err(timed_out("connection")));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                this.state.read(buf.filled().len() - before);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, what)) = this.state.deadline() else { return Poll::Pending };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                match this.timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.state.expire(what);
                        Poll::Ready(Err(timed_out(what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Watched {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for Watched {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Watched {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Watched {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Watched {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Watched {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Watched {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

/// The proxy's module that marks a request head complete on its connection.
pub struct HeadRead;

#[async_trait]
impl HttpModule for HeadRead {
    async fn request_header_filter(&mut self, _req: &mut RequestHeader) -> pingora_core::Result<()> {
        // HTTP/2 streams run on tasks of their own: their connection is past its preface.
        let _ = CONNECTION.try_with(|c| c.head_complete());
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl HttpModuleBuilder for HeadRead {
    fn init(&self) -> Module {
        Box::new(HeadRead)
    }
}

/// HTTP server options with the HTTP/2 idle timeout set.
pub fn server_options(limits: &ConnectionLimits) -> HttpServerOptions {
    let mut options = HttpServerOptions::default();
    options.h2_idle_timeout = Some(limits.idle_timeout);
    options
}

/// An HTTP application (the proxy) whose HTTP/1 request cycles start the idle deadline,
/// and whose keep-alive lasts `idle_timeout` rather than pingora's 60 s.
pub struct DeadlineApp<A> {
    inner: Arc<A>,
    keepalive_seconds: u64,
}

impl<A> DeadlineApp<A> {
    pub fn new(inner: A, limits: &ConnectionLimits) -> DeadlineApp<A> {
        // pingora counts its keep-alive in whole seconds (0 is "forever"); the deadline is exact.
        let keepalive_seconds = limits.idle_timeout.as_secs_f64().ceil().max(1.0) as u64;
        DeadlineApp { inner: Arc::new(inner), keepalive_seconds }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for DeadlineApp<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        if !session.is_http2() {
            let _ = CONNECTION.try_with(|c| c.request_cycle());
            if session.get_keepalive().is_some() && !*shutdown.borrow() {
                session.set_keepalive(Some(self.keepalive_seconds));
            }
        }
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        self.inner.http_cleanup().await
    }
}

// ---- the accept loop ----------------------------------------------------------------------

/// The proxy's listening service: pingora's, with caps at accept and deadlines.
pub struct ProxyListener<A> {
    name: String,
    address: SocketAddr,
    listener: Option<std::net::TcpListener>,
    tls: Option<Arc<Acceptor>>,
    app: Option<Arc<A>>,
    tracker: Arc<ConnectionTracker>,
    accepting: Accepting,
}

impl<A> ProxyListener<A> {
    /// `listener` is bound already ([`bind_listener`], or taken over from the previous
    /// process); `tls` is absent for plain HTTP behind a load balancer.
    pub fn new(
        name: &str,
        listener: std::net::TcpListener,
        tls: Option<TlsSettings>,
        app: A,
        tracker: Arc<ConnectionTracker>,
        accepting: Accepting,
    ) -> Result<ProxyListener<A>, GatewayError> {
        let address = listener.local_addr().map_err(|e| GatewayError::Upgrade(format!("listening socket: {e}")))?;
        Ok(ProxyListener {
            name: name.to_string(),
            address,
            listener: Some(listener),
            tls: tls.map(|t| Arc::new(t.build())),
            app: Some(Arc::new(app)),
            tracker,
            accepting,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

/// Says "accepting" while it lives (however the accept loop ends: shutdown or abort).
struct AcceptingFlag(Accepting);

impl AcceptingFlag {
    fn set(flag: &Accepting) -> AcceptingFlag {
        flag.store(true, Ordering::SeqCst);
        AcceptingFlag(flag.clone())
    }
}

impl Drop for AcceptingFlag {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Serves one admitted connection: handshake, then the application, under deadlines.
async fn serve<A: ServerApp + Send + Sync + 'static>(
    stream: L4Stream,
    peer: Option<SocketAddr>,
    permit: Permit,
    tls: Option<Arc<Acceptor>>,
    app: Arc<A>,
    shutdown: ShutdownWatch,
) {
    let tracker = permit.tracker.clone();
    let limits = tracker.limits();
    let stream: Stream = match tls {
        None => Box::new(stream),
        Some(acceptor) => match tokio::time::timeout(limits.handshake_timeout, acceptor.tls_handshake(stream)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => {
                tracker.metrics.tls_handshake_failures.inc();
                tracing::debug!(peer = ?peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracker.metrics.connection_timeouts.with_label_values(&["handshake"]).inc();
                tracing::debug!(peer = ?peer, "closing a connection at its TLS handshake deadline");
                return;
            }
        },
    };
    let http2 = matches!(stream.selected_alpn_proto(), Some(ALPN::H2));
    let state = Arc::new(ConnectionState::new(limits, http2, peer, tracker.metrics.clone()));
    let stream: Stream = Box::new(Watched::new(stream, state.clone()));
    CONNECTION
        .scope(state, async move {
            let mut next = app.process_new(stream, &shutdown).await;
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        })
        .await;
    drop(permit);
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> Service for ProxyListener<A> {
    async fn start_service(&mut self, fds: Option<ListenFds>, mut shutdown: ShutdownWatch, _listeners_per_fd: usize) {
        let (Some(listener), Some(app)) = (self.listener.take(), self.app.take()) else { return };
        // In pingora's table, the socket goes to the next process on a graceful upgrade.
        if let Some(fds) = &fds {
            fds.lock().add(self.address.to_string(), listener.as_raw_fd());
        }
        let listener = match listener.set_nonblocking(true).and_then(|()| tokio::net::TcpListener::from_std(listener)) {
            Ok(l) => L4Listener::from(l),
            Err(e) => {
                tracing::error!(address = %self.address, error = %e, "cannot use the listening socket");
                return;
            }
        };
        let accepting = AcceptingFlag::set(&self.accepting);
        tracing::info!(
            address = %self.address,
            max_connections = self.tracker.max_connections(),
            max_connections_per_ip = self.tracker.limits().max_connections_per_ip,
            "accepting connections"
        );
        loop {
            let accepted = tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                    continue;
                }
                accepted = listener.accept() => accepted,
            };
            let mut stream = match accepted {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors: accept() would fail at once again; let some close.
                    if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) {
                        tracing::warn!(error = %e, "accept failed: out of file descriptors");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    } else {
                        tracing::debug!(error = %e, "accept failed");
                    }
                    continue;
                }
            };
            let peer = stream.get_socket_digest().and_then(|d| d.peer_addr().and_then(|a| a.as_inet().copied()));
            let permit = match self.tracker.admit(peer.map(|p| p.ip())) {
                Ok(p) => p,
                Err(reason) => {
                    tracing::debug!(peer = ?peer, reason = reason.label(), "connection refused at accept");
                    continue; // dropping it closes it
                }
            };
            let _ = stream.set_nodelay();
            tokio::spawn(serve(stream, peer, permit, self.tls.clone(), app.clone(), shutdown.clone()));
        }
        drop(accepting);
        tracing::info!(address = %self.address, "stopped accepting connections");
        drop(listener);
        // Wakes keep-alive connections parked between requests, so they close.
        app.cleanup().await;
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn threads(&self) -> Option<usize> {
        None
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        Some(vec![self.address.to_string()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits { max_connections: Some(max), max_connections_per_ip: per_ip, ..ConnectionLimits::default() }
    }

    #[test]
    fn permits_count_in_all_and_per_client_and_give_back_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let t = ConnectionTracker::new(&limits(3, 2), vec![Cidr::parse("10.0.0.1").unwrap()], metrics.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = t.admit(Some(a)).unwrap();
        let a2 = t.admit(Some(a)).unwrap();
        assert_eq!(t.admit(Some(a)).err(), Some(Refused::PerClient));
        let b1 = t.admit(Some(b)).unwrap();
        assert_eq!(t.admit(Some(b)).err(), Some(Refused::MaxConnections));
        assert_eq!((t.open(), metrics.connections_open.get()), (3, 3));
        drop(a1);
        // The refused one gave its per-client place back: b may have a second now.
        let b2 = t.admit(Some(b)).unwrap();
        drop((a2, b1, b2));
        assert_eq!((t.open(), metrics.connections_open.get()), (0, 0));
        assert!(t.per_client().is_empty());
        // A trusted proxy is not held to the per-client cap.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Permit> = (0..3).map(|_| t.admit(Some(proxy)).unwrap()).collect();
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
    }

    #[test]
    fn the_default_cap_follows_the_open_files_limit() {
        assert_eq!(derived_max_connections(1024), 384);
        assert_eq!(derived_max_connections(1_048_576), 10_000);
        assert_eq!(derived_max_connections(100), 64);
    }

    #[test]
    fn a_taken_address_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert_eq!(bind_listener(addr).unwrap_err().to_string(), format!("cannot listen on {addr}: address in use"));
    }
}
