//! Deadlines on a connection's reads: the request head, the idle wait, the HTTP/2 preface.

use std::any::Any;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::modules::http::{HttpModule, HttpModuleBuilder, Module};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream, TimingDigest,
    UniqueID, UniqueIDType, ALPN,
};
use pingora_core::server::ShutdownWatch;
use pingora_http::RequestHeader;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use fapi_enforcement::config::ConnectionLimits;
use fapi_enforcement::metrics::Metrics;

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
pub(super) struct ConnectionState {
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
    pub(super) fn new(limits: &ConnectionLimits, http2: bool, peer: Option<SocketAddr>, metrics: Arc<Metrics>) -> Self {
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
    pub(super) static CONNECTION: Arc<ConnectionState>;
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
    pub(super) fn new(inner: Stream, state: Arc<ConnectionState>) -> Watched {
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
