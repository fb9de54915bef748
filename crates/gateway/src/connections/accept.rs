//! The proxy listener's own accept loop: caps before TLS, the handshake deadline.

use crate::error::GatewayError;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::tls::{Acceptor, TlsSettings};
use pingora_core::protocols::l4::listener::Listener as L4Listener;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, Stream, ALPN};
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;

use super::buffered::Buffered;
use super::deadlines::{ConnectionState, CONNECTION};
use super::*;

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
    // Buffered as pingora's own listener buffers its connections (buffered.rs).
    let stream = Buffered::new(stream);
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
            listener = %self.name,
            address = %self.address,
            tls = self.tls.is_some(),
            max_connections = self.tracker.max_connections(),
            max_connections_per_ip = self.tracker.limits().max_connections_per_ip,
            "listening: accepting connections"
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
