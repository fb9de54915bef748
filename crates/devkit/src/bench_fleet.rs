//! `fapi-gateway bench-fleet`: the fleet's figures on loopback, with a `redis-server`
//! from PATH. Three gateway processes share one Redis.
//!
//! - Propagation: consents are revoked one at a time (the authorization server's status,
//!   then `POST /revocations` at replica 1); the time from that POST until replicas 2 and
//!   3 both refuse the consent's token (each held it cached as active) — p50, p99, max.
//! - Shared cache: a fleet with `cluster.shared_cache` off and one with it on, each given
//!   the same round-robin load over distinct tokens (every token once at each replica):
//!   authorization-server calls per distinct token; then the hit path (tokens cached at
//!   every replica) driven round-robin, the two fleets alternating, medians of the rounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::demo::{start_fixtures, FixtureAddresses, FixtureOptions, EMBEDDED_POLICIES};
use crate::fixtures::AuthorizationServer;
use crate::pki::DevPki;

/// Which replica and token request `i` goes to.
type Target = Arc<dyn Fn(u64) -> (String, String) + Send + Sync>;

const ADMIN_SECRET: &str = "bench-admin-secret-0123456789";
const PERMISSIONS: [&str; 2] = ["ReadAccountsBasic", "ReadBalances"];

/// The `bench-fleet` command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetBenchArgs {
    /// Revocations timed for propagation.
    #[arg(long, default_value_t = 1_000)]
    pub revocations: usize,
    /// Distinct tokens of the shared-cache load.
    #[arg(long, default_value_t = 10_000)]
    pub tokens: usize,
    /// Connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds per hit-path round.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Hit-path rounds per fleet (alternating).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

/// The figures.
#[derive(Debug, Clone, Default)]
pub struct FleetReport {
    /// Milliseconds from the revocation's POST at one replica until both others refused.
    pub propagation_ms: Vec<f64>,
    /// Authorization-server calls per distinct token: shared cache off, on.
    pub calls_per_token: (f64, f64),
    /// Hit-path requests per second of each round: shared cache off, on.
    pub hit_rps: (Vec<f64>, Vec<f64>),
    /// Requests that were neither 200 nor an expected refusal.
    pub errors: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    percentile(&v, 0.5)
}

impl FleetReport {
    /// The report as a text table.
    pub fn table(&self) -> String {
        let mut p = self.propagation_ms.clone();
        p.sort_by(f64::total_cmp);
        let (off, on) = (median(&self.hit_rps.0), median(&self.hit_rps.1));
        let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        format!(
            "propagation over {} revocations, 3 replicas: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n\
             authorization-server calls per distinct token (round-robin, 3 replicas): shared cache off {:.3}, on {:.3}\n\
             hit path req/s, shared cache off: [{}] median {off:.0}; on: [{}] median {on:.0}; on/off {:.3}\n\
             errors: {}\n",
            p.len(),
            percentile(&p, 0.5),
            percentile(&p, 0.99),
            p.last().copied().unwrap_or(0.0),
            self.calls_per_token.0,
            self.calls_per_token.1,
            fmt(&self.hit_rps.0),
            fmt(&self.hit_rps.1),
            on / off.max(1e-9),
            self.errors,
        )
    }
}

/// The authorization server's runtime, shut down without waiting when dropped (it is
/// dropped inside the benchmark's own runtime, where blocking is not allowed).
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// A child process, killed when dropped.
struct Process(std::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Process, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    std::process::Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

fn pick_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// One replica: its addresses and process.
struct Replica {
    url: String,
    admin: std::net::SocketAddr,
    _process: Process,
}

/// Starts three gateways on `redis`, with the shared cache `shared` or not.
async fn fleet(
    binary: &Path,
    dir: &Path,
    authorization_server: std::net::SocketAddr,
    bank: std::net::SocketAddr,
    redis: &str,
    shared: bool,
) -> Result<Vec<Replica>, String> {
    let mut replicas = Vec::new();
    for n in 0..3 {
        let d = dir.join(format!("replica-{n}"));
        std::fs::create_dir_all(d.join("policies")).map_err(|e| e.to_string())?;
        for (name, text) in EMBEDDED_POLICIES {
            std::fs::write(d.join("policies").join(name), text).map_err(|e| e.to_string())?;
        }
        let (listen, admin) = (pick_port(), pick_port());
        let certs = dir.parent().unwrap_or(dir).join("certs");
        let shared = if shared {
            let key = dir.join("cluster.key");
            std::fs::write(&key, "bench-cluster-key-0123456789abcdef0123456789").map_err(|e| e.to_string())?;
            format!("shared_cache = true\ncluster_key_file = \"{}\"\n", key.display())
        } else {
            String::new()
        };
        let text = format!(
            r#"policies = "policies"
[listener]
address = "{listen}"
certificate = "{certs}/gateway.pem"
private_key = "{certs}/gateway.key"
client_ca = "{certs}/ca.pem"
[admin]
address = "{admin}"
bearer_secret = "{ADMIN_SECRET}"
[authorization_server]
introspection_endpoint = "https://{authorization_server}/introspect"
client_id = "fapi-gateway"
client_secret = "bench-secret"
ca = "{certs}/ca.pem"
max_concurrent_calls = 256
[cache]
max_ttl_seconds = 600
capacity = 1000000
[upstreams]
gobank = "http://{bank}"
hyperscalebank = "http://{bank}"
[logging]
level = "warn"
[server]
threads = 1
[cluster]
redis_url = "{redis}"
{shared}"#,
            certs = certs.display(),
        );
        let path = d.join("gateway.toml");
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        let config = path.display().to_string();
        let process = spawn(binary, &["run", "--config", &config], &d.join("gateway.log"))?;
        fapi_gateway_server::server::wait_for_listener(listen).await?;
        fapi_gateway_server::server::wait_for_listener(admin).await?;
        replicas.push(Replica { url: format!("https://{listen}/gobank/accounts"), admin, _process: process });
    }
    Ok(replicas)
}

async fn status(client: &reqwest::Client, url: &str, token: &str) -> Option<u16> {
    let r = client.get(url).bearer_auth(token).send().await.ok()?;
    let status = r.status().as_u16();
    r.bytes().await.ok()?;
    Some(status)
}

/// Requests `(url, token)` of `target(i)` for i in 0.. until `max` or `duration`, over
/// every client; (requests, errors, seconds).
async fn drive(clients: &[reqwest::Client], max: u64, duration: Duration, target: Target) -> (u64, u64, f64) {
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, next, errors, target) = (client.clone(), next.clone(), errors.clone(), target.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max || started.elapsed() >= duration {
                        return done;
                    }
                    let (url, token) = target(i);
                    if status(&client, &url, &token).await != Some(200) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    done += 1;
                }
            })
        })
        .collect();
    let mut requests = 0;
    for t in tasks {
        requests += t.await.unwrap_or(0);
    }
    (requests, errors.load(Ordering::Relaxed), started.elapsed().as_secs_f64())
}

fn mint(authz: &AuthorizationServer, thumbprint: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let consent = authz.authorised_consent("financroo", "gobank", &PERMISSIONS, "alice", &["GB-1001"]);
            let token = authz.mint_token("financroo", &consent, "openid accounts", thumbprint);
            (consent, token)
        })
        .collect()
}

/// Runs the fleet benchmark; `binary` is this program (the gateways, the bank).
pub async fn run(args: FleetBenchArgs, binary: PathBuf) -> Result<FleetReport, String> {
    let redis_server = std::env::var_os("PATH")
        .and_then(|p| p.to_str().map(|p| p.split(':').map(|d| Path::new(d).join("redis-server")).find(|f| f.is_file())))
        .flatten()
        .ok_or("bench-fleet needs redis-server on PATH (apt-get install redis-server)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let pki = DevPki::at(&dir.path().join("certs"));
    pki.generate()?;
    let redis_port = pick_port().port().to_string();
    let _redis = spawn(
        &redis_server,
        &["--port", &redis_port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        &logs.join("redis.log"),
    )?;
    let redis = format!("redis://127.0.0.1:{redis_port}");
    fapi_gateway_server::server::wait_for_listener(format!("127.0.0.1:{redis_port}").parse().expect("valid")).await?;

    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let fixture_pki = pki.clone();
    let (_as_runtime, fixtures) = std::thread::spawn(move || -> Result<_, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let options = FixtureOptions {
            introspection_client_id: "fapi-gateway".into(),
            introspection_client_secret: "bench-secret".into(),
            token_lifetime: Duration::from_secs(3600),
            revocation_hook: None,
            consent_storage_secret: None,
        };
        let addresses =
            FixtureAddresses { authorization_server: any, go_bank: any, hyperscale_bank: any, consent_storage: None };
        let fixtures = rt.block_on(start_fixtures(&fixture_pki, addresses, options))?;
        Ok((rt, fixtures))
    })
    .join()
    .map_err(|_| "the fixtures' thread panicked".to_string())??;
    let _as_runtime = BackgroundRuntime(Some(_as_runtime));
    let bank = pick_port();
    let _bank = spawn(
        &binary,
        &["fixture", "bank", "--bank", "gobank", "--listen", &bank.to_string()],
        &logs.join("bank.log"),
    )?;
    fapi_gateway_server::server::wait_for_listener(bank).await?;
    let thumbprint = {
        let der =
            fapi_enforcement::client_identity::read_certificates(&pki.tpp_cert()).map_err(|e| e.to_string())?.remove(0);
        fapi_enforcement::client_identity::thumbprint(&der)
    };
    let authz = fixtures.authorization_server.clone();
    // Three idle connections per client: the clients go round the three replicas.
    let clients = crate::bench::tpp_clients(&pki, args.concurrency.max(1), 3)?;
    let as_addr = fixtures.authorization_server_addr;
    let mut report = FleetReport::default();

    // Propagation.
    {
        let replicas = fleet(&binary, &dir.path().join("propagation"), as_addr, bank, &redis, false).await?;
        let tokens = mint(&authz, &thumbprint, args.revocations);
        let urls: Vec<String> = replicas.iter().map(|r| r.url.clone()).collect();
        let warm = {
            let (urls, tokens) = (urls.clone(), tokens.clone());
            Arc::new(move |i: u64| (urls[i as usize % 3].clone(), tokens[i as usize / 3].1.clone()))
        };
        let (_, errors, _) = drive(&clients, tokens.len() as u64 * 3, Duration::from_secs(600), warm).await;
        report.errors += errors;
        let admin = reqwest::Client::new();
        let client = &clients[0];
        for (consent, token) in &tokens {
            authz.revoke_consent(consent).await;
            let started = Instant::now();
            let r = admin
                .post(format!("http://{}/revocations", replicas[0].admin))
                .bearer_auth(ADMIN_SECRET)
                .json(&serde_json::json!({"consent_id": consent}))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !r.status().is_success() {
                return Err(format!("revocation answered {}", r.status()));
            }
            let mut pending = vec![&urls[1], &urls[2]];
            while !pending.is_empty() {
                if started.elapsed() > Duration::from_secs(10) {
                    return Err("a revocation did not reach every replica within 10 s".into());
                }
                let mut still = Vec::new();
                for url in pending {
                    if status(client, url, token).await == Some(200) {
                        still.push(url);
                    }
                }
                pending = still;
            }
            report.propagation_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }

    // Shared cache off and on: introspections per distinct token, then the hit path.
    let off = fleet(&binary, &dir.path().join("shared-off"), as_addr, bank, &redis, false).await?;
    let on = fleet(&binary, &dir.path().join("shared-on"), as_addr, bank, &redis, true).await?;
    let mut hot: Vec<Target> = Vec::new();
    for (i, replicas) in [&off, &on].into_iter().enumerate() {
        let tokens = Arc::new(mint(&authz, &thumbprint, args.tokens));
        let urls: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.url.clone()).collect());
        let n = tokens.len() as u64;
        let before = authz.introspection_calls();
        let round_robin = {
            let (urls, tokens) = (urls.clone(), tokens.clone());
            // Pass p (of 3) sends token t to replica (t + p) % 3: every token reaches every
            // replica, its requests a pass apart.
            Arc::new(move |j: u64| (urls[((j + j / n) % 3) as usize].clone(), tokens[(j % n) as usize].1.clone()))
        };
        let (_, errors, _) = drive(&clients, n * 3, Duration::from_secs(1200), round_robin).await;
        report.errors += errors;
        let per_token = (authz.introspection_calls() - before) as f64 / n as f64;
        if i == 0 {
            report.calls_per_token.0 = per_token;
        } else {
            report.calls_per_token.1 = per_token;
        }
        // The first 100 tokens are now cached at every replica: the hit path.
        let hot_n = n.min(100);
        hot.push(Arc::new(move |j: u64| (urls[j as usize % 3].clone(), tokens[(j % hot_n) as usize].1.clone())));
    }
    let duration = Duration::from_secs(args.duration.max(1));
    for _ in 0..args.rounds.max(1) {
        for (i, target) in hot.iter().enumerate() {
            let (requests, errors, seconds) = drive(&clients, u64::MAX, duration, target.clone()).await;
            report.errors += errors;
            let rps = requests as f64 / seconds;
            if i == 0 {
                report.hit_rps.0.push(rps);
            } else {
                report.hit_rps.1.push(rps);
            }
        }
    }
    Ok(report)
}
