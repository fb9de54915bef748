//! Hot reload: on SIGHUP, or when `gateway.toml`, a policy file or a listener certificate
//! file changes, the configuration is read and validated whole and then swapped in at
//! once. Requests in flight finish on the generation they started with. A configuration
//! that does not validate is refused, logged and counted, and the old one keeps serving.
//!
//! Live: policies, identity headers and forwarding options, the server certificate, the
//! client CA bundle and the grant JWT issuer and keys (`[grant_jwt]`). The listener and admin addresses, the authorization server, the
//! cache's size and lifetimes, connection limits, threads and logging take effect on restart (a reload that
//! changes them says so in the log).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::error::GatewayError;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_core::server::{ListenFds, ShutdownWatch};
use pingora_core::services::Service;

use fapi_enforcement::client_identity::{client_verifier, ClientVerifier, ServerCertificate};
use fapi_enforcement::config::GatewayConfig;
use fapi_enforcement::enforcer::{ForwardingSettings, Live};
use fapi_enforcement::metrics::Metrics;

/// How often files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// The parts of a configuration that only a restart applies, in comparable form.
fn restart_only(c: &GatewayConfig) -> Vec<(&'static str, String)> {
    vec![
        (
            "listener",
            format!(
                "{} http2={} tls={} profile={:?} from_handshake={} mode={:?}",
                c.listener.address,
                c.listener.http2,
                c.listener.tls.is_some(),
                c.listener.tls_profile,
                c.listener.client_certificates == fapi_enforcement::config::ClientCertificateSource::Handshake,
                c.listener.mode
            ),
        ),
        (
            "admin",
            format!("{:?}", c.admin.as_ref().map(|a| (a.address, a.bearer_secret.as_ref().map(|s| sha2_short(s))))),
        ),
        ("authorization_servers", format!("{:?}", c.authorization_servers)),
        ("cache", format!("{:?}", c.cache)),
        ("server", format!("{:?}", c.server)),
        ("logging", format!("{:?}", c.logging)),
        ("dpop", format!("{:?}", c.dpop)),
        ("connections", format!("{:?}", c.connections)),
        ("cluster", format!("{:?}", c.cluster)),
        ("upstreams", format!("{:?}", c.upstream_settings)),
        ("signals", format!("{:x}", sha2_short(&format!("{:?}", c.signals)))),
    ]
}

fn sha2_short(s: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(s.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8 bytes"))
}

/// Modification time and size of every watched file (absent files count too).
type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

fn fingerprint(config_path: &Path, policies_dir: &Path, tls_files: &[PathBuf]) -> Fingerprint {
    let stat = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
    let mut files = vec![config_path.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(policies_dir) {
        let mut policies: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        policies.sort();
        files.extend(policies);
    }
    files.extend(tls_files.iter().cloned());
    files
        .into_iter()
        .map(|p| {
            let s = stat(&p);
            (p, s)
        })
        .collect()
}

struct Applied {
    restart_only: Vec<(&'static str, String)>,
    policies_dir: PathBuf,
    tls_files: Vec<PathBuf>,
    generation: i64,
}

/// Re-reads and applies the configuration.
pub struct Reloader {
    config_path: PathBuf,
    overrides: fapi_enforcement::config::AddressOverrides,
    /// Authorization servers built at start; policies may name only these.
    servers: Arc<fapi_enforcement::cache::ServerLinks>,
    live: Arc<ArcSwap<Live>>,
    server_certificate: Option<Arc<ServerCertificate>>,
    client_verifier: Arc<ClientVerifier>,
    metrics: Arc<Metrics>,
    applied: Mutex<Applied>,
    /// Upstreams built at start (their pools and health checks); policies may name only these.
    upstreams: Vec<String>,
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    pub generation: i64,
    /// Sections that changed but take effect on restart.
    pub needs_restart: Vec<&'static str>,
}

impl Reloader {
    pub fn new(
        config: &GatewayConfig,
        servers: Arc<fapi_enforcement::cache::ServerLinks>,
        live: Arc<ArcSwap<Live>>,
        server_certificate: Option<Arc<ServerCertificate>>,
        client_verifier: Arc<ClientVerifier>,
        metrics: Arc<Metrics>,
    ) -> Reloader {
        metrics.config_generation.set(1);
        metrics.config_last_reload_success.set(1);
        Reloader {
            config_path: config.source.clone(),
            overrides: config.overrides,
            servers,
            live,
            server_certificate,
            client_verifier,
            metrics,
            upstreams: config.upstream_settings.keys().cloned().collect(),
            applied: Mutex::new(Applied {
                restart_only: restart_only(config),
                policies_dir: config.policies_dir.clone(),
                tls_files: tls_files(config),
                generation: 1,
            }),
        }
    }

    /// Reads the configuration and, if all of it is valid, applies it.
    pub fn reload(&self) -> Result<ReloadReport, GatewayError> {
        let result = self.try_reload();
        match &result {
            Ok(report) => {
                self.metrics.config_reloads.with_label_values(&["ok"]).inc();
                self.metrics.config_last_reload_success.set(1);
                self.metrics.config_generation.set(report.generation);
                tracing::info!(generation = report.generation, "configuration reloaded");
                if !report.needs_restart.is_empty() {
                    tracing::warn!(sections = ?report.needs_restart, "changed sections take effect on restart");
                }
            }
            Err(e) => {
                self.metrics.config_reloads.with_label_values(&["error"]).inc();
                self.metrics.config_last_reload_success.set(0);
                tracing::error!(error = %e, "configuration reload refused; the previous configuration keeps serving");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<ReloadReport, GatewayError> {
        let config = GatewayConfig::load(&self.config_path)?
            .with_overrides(self.overrides)
            .map_err(GatewayError::NeedsRestart)?;
        for api in config.policies.apis() {
            if !self.servers.contains_key(&api.authorization_server) {
                return Err(GatewayError::NeedsRestart(format!(
                    "API `{}` names authorization server `{}`, which is not running: adding a server needs a restart",
                    api.name, api.authorization_server
                )));
            }
        }
        for api in config.policies.apis() {
            if !self.upstreams.contains(&api.upstream.name) {
                return Err(GatewayError::NeedsRestart(format!(
                    "API `{}` names upstream `{}`, which is not running: adding an upstream needs a restart",
                    api.name, api.upstream.name
                )));
            }
        }
        // Everything fallible first; then swap, so a bad file changes nothing.
        let key = match &config.listener.tls {
            Some((cert, key)) => Some(ServerCertificate::prepare(cert, key)?),
            None => None,
        };
        let verifier = client_verifier(&config.listener.client_ca, &config.listener.crls)?;
        let settings = ForwardingSettings::of(&config);
        let mut applied = self.applied.lock().unwrap();
        let new_restart_only = restart_only(&config);
        let needs_restart = new_restart_only
            .iter()
            .zip(&applied.restart_only)
            .filter(|(new, old)| new.1 != old.1)
            .map(|(new, _)| new.0)
            .collect();
        if let (Some(current), Some(key)) = (&self.server_certificate, key) {
            current.replace(key);
        }
        self.client_verifier.replace(verifier);
        let tls = tls_files(&config);
        let policies_dir = config.policies_dir.clone();
        fapi_enforcement::cache::set_consent_paths(&self.servers, &config.policies);
        self.live.store(Arc::new(Live { policies: config.policies, settings }));
        applied.generation += 1;
        applied.policies_dir = policies_dir;
        applied.tls_files = tls;
        Ok(ReloadReport { generation: applied.generation, needs_restart })
    }

    fn current_fingerprint(&self) -> Fingerprint {
        let applied = self.applied.lock().unwrap();
        fingerprint(&self.config_path, &applied.policies_dir, &applied.tls_files)
    }

    /// Reloads on SIGHUP and on file changes (once a change has stood still for one poll,
    /// so a half-written file is not read), until shutdown.
    pub async fn watch(self: Arc<Self>, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; reloading on file changes only");
                None
            }
        };
        let mut seen = self.current_fingerprint();
        let mut pending: Option<Fingerprint> = None;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    tracing::info!("SIGHUP: reloading");
                    let _ = self.reload();
                    seen = self.current_fingerprint();
                    pending = None;
                }
                _ = tokio::time::sleep(POLL) => {
                    let now = self.current_fingerprint();
                    if now == seen {
                        pending = None;
                    } else if pending.as_ref() == Some(&now) {
                        tracing::info!("configuration files changed: reloading");
                        let _ = self.reload();
                        seen = self.current_fingerprint();
                        pending = None;
                    } else {
                        pending = Some(now);
                    }
                }
            }
        }
    }
}

fn tls_files(c: &GatewayConfig) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = c.listener.tls.iter().flat_map(|(cert, key)| [cert.clone(), key.clone()]).collect();
    files.push(c.listener.client_ca.clone());
    files.extend(c.listener.crls.iter().cloned());
    // The grant JWT keys: replacing a key file rotates it.
    files.extend(c.grant_jwt.iter().flat_map(|g| g.key_files.iter().cloned()));
    files
}

/// Runs the reloader's watch as a pingora service.
pub struct ReloadService(pub Arc<Reloader>);

#[async_trait]
impl Service for ReloadService {
    async fn start_service(&mut self, _fds: Option<ListenFds>, shutdown: ShutdownWatch, _listeners_per_fd: usize) {
        self.0.clone().watch(shutdown).await;
    }

    fn name(&self) -> &str {
        "fapi-gateway reload"
    }

    fn threads(&self) -> Option<usize> {
        Some(1)
    }
}
