//! The admin listener: health for now (metrics, readiness and revocation come with their
//! issues). Runs as a pingora service so it starts and drains with the gateway.

use std::net::SocketAddr;

use async_trait::async_trait;
use axum::routing::get;
use axum::Router;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;

pub struct AdminService {
    address: SocketAddr,
    router: Option<Router>,
}

impl AdminService {
    pub fn new(address: SocketAddr) -> AdminService {
        let router = Router::new().route("/healthz", get(|| async { "ok\n" }));
        AdminService {
            address,
            router: Some(router),
        }
    }
}

#[async_trait]
impl Service for AdminService {
    async fn start_service(
        &mut self,
        _fds: Option<ListenFds>,
        mut shutdown: ShutdownWatch,
        _listeners_per_fd: usize,
    ) {
        let Some(router) = self.router.take() else {
            return;
        };
        let listener = match tokio::net::TcpListener::bind(self.address).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %self.address, error = %e, "admin listener cannot bind");
                return;
            }
        };
        let stop = async move {
            let _ = shutdown.changed().await;
        };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin listener failed");
        }
    }

    fn name(&self) -> &str {
        "fapi-gateway admin"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}
