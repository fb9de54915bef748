//! `fapi-gateway bench`: the load benchmark. Everything runs on loopback: the mock
//! authorization server (in this process), Go Bank, a gateway with authorization and one
//! without (public routes: TLS and proxying only), the floors (nginx as a plain mutual-TLS
//! proxy, and a bare pingora proxy: the embedding example without enforcement) and nginx
//! with the `auth_request` introspection pattern. Each scenario drives HTTPS with the
//! TPP's client certificate over keep-alive connections, from the in-process reqwest
//! generator and from oha; the scenarios alternate over several rounds of one invocation
//! and the report gives medians, CPU per request of each proxy's processes and the steal
//! time during each run, so ratios are meaningful on a noisy shared machine.
//! Two-gateway comparisons ride along: the grant JWT off and on in every round
//! ([`crate::bench_jwt`]), and rate limits and tracing against the plain hot path in
//! rounds of their own ([`crate::bench_traffic`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::demo::{start_fixtures, FixtureAddresses, FixtureOptions, Fixtures, EMBEDDED_POLICIES};
use crate::fixtures::RevocationHook;
use crate::pki::DevPki;
use fapi_enforcement::cache::IntrospectionCache;
use fapi_enforcement::config::{CacheConfig, GatewayConfig};
use fapi_enforcement::introspection::{IntrospectionError, Introspector, TokenInfo};
use fapi_enforcement::metrics::Metrics;

/// The scenarios, in the order they run in each round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// The bank directly (plain HTTP): the backend's ceiling.
    BankDirect,
    /// nginx as a plain mutual-TLS proxy: the nginx floor.
    NginxPlain,
    /// A bare pingora proxy (the embedding example without enforcement): pingora's floor.
    BareProxy,
    /// The gateway with authorization off (public routes): the cost of TLS and proxying.
    GatewayNoAuth,
    /// The gateway, every token a cache hit.
    GatewayHot,
    /// The gateway, every request a new token (introspection-bound).
    GatewayCold,
    /// The gateway while consents are revoked during the run.
    RevocationStorm,
    /// nginx with auth_request, an njs introspection handler and proxy_cache on the token.
    Nginx,
    /// The mock authorization server's introspection endpoint directly: the ceiling of
    /// the cold scenario.
    AuthorizationServer,
    /// Hot tokens with the grant JWT (`forward_jwt`) off and on, back to back in each round
    /// ([`crate::bench_jwt`]).
    GrantJwt,
    /// The hot path with one rate limit per TPP, against the plain hot path (rounds of its
    /// own, [`crate::bench_traffic`]).
    RateLimited,
    /// The same rate limit counted fleet-wide in Redis (`[cluster]`, leases of 10), against
    /// the plain hot path (rounds).
    RateLimitedFleet,
    /// The hot path with tracing at 1 % sampling, against the plain hot path (rounds).
    Traced1,
    /// The hot path with tracing at 100 % sampling, against the plain hot path (rounds).
    Traced100,
}

impl Scenario {
    pub const ALL: [Scenario; 14] = [
        Scenario::BankDirect,
        Scenario::NginxPlain,
        Scenario::BareProxy,
        Scenario::GatewayNoAuth,
        Scenario::GatewayHot,
        Scenario::GatewayCold,
        Scenario::RevocationStorm,
        Scenario::Nginx,
        Scenario::AuthorizationServer,
        Scenario::GrantJwt,
        Scenario::RateLimited,
        Scenario::RateLimitedFleet,
        Scenario::Traced1,
        Scenario::Traced100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BankDirect => "bank-direct",
            Scenario::NginxPlain => "nginx-plain",
            Scenario::BareProxy => "pingora-bare",
            Scenario::GatewayNoAuth => "gateway-no-auth",
            Scenario::GatewayHot => "gateway-hot",
            Scenario::GatewayCold => "gateway-cold",
            Scenario::RevocationStorm => "revocation-storm",
            Scenario::Nginx => "nginx-auth-request",
            Scenario::AuthorizationServer => "as-introspection",
            Scenario::GrantJwt => "gateway-hot-jwt",
            Scenario::RateLimited => "gateway-rate-limited",
            Scenario::RateLimitedFleet => "gateway-rate-limited-fleet",
            Scenario::Traced1 => "gateway-traced-1pct",
            Scenario::Traced100 => "gateway-traced-100pct",
        }
    }

    /// A full name, or its short form: bank, nginx-plain, bare, no-auth, hot, cold, storm,
    /// nginx, as.
    pub fn parse(s: &str) -> Option<Scenario> {
        let short = |c: Scenario| match c {
            Scenario::BankDirect => "bank",
            Scenario::NginxPlain => "nginx-plain",
            Scenario::BareProxy => "bare",
            Scenario::GatewayNoAuth => "no-auth",
            Scenario::GatewayHot => "hot",
            Scenario::GatewayCold => "cold",
            Scenario::RevocationStorm => "storm",
            Scenario::Nginx => "nginx",
            Scenario::AuthorizationServer => "as",
            Scenario::GrantJwt => "jwt",
            Scenario::RateLimited => "limits",
            Scenario::RateLimitedFleet => "limits-fleet",
            Scenario::Traced1 => "traced-1",
            Scenario::Traced100 => "traced-100",
        };
        Scenario::ALL.into_iter().find(|c| c.name() == s || short(*c) == s)
    }

    /// Whether oha drives it too: one URL and fixed headers (not the cold scenario's
    /// token per request, the storm's revocations or the authorization server's POSTs).
    fn oha(self) -> bool {
        // The jwt and traffic scenarios compare two gateways with reqwest alone, as they did.
        !matches!(
            self,
            Scenario::GatewayCold
                | Scenario::RevocationStorm
                | Scenario::AuthorizationServer
                | Scenario::GrantJwt
                | Scenario::RateLimited
                | Scenario::RateLimitedFleet
                | Scenario::Traced1
                | Scenario::Traced100
        )
    }
}

/// The `bench` command's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Connections of the load generator.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Seconds per scenario.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// At most this many requests per scenario.
    #[arg(long, default_value_t = 1_000_000)]
    pub requests: u64,
    /// Tokens the hot scenarios cycle through.
    #[arg(long, default_value_t = 100)]
    pub hot_tokens: usize,
    /// Tokens minted for the cold scenario.
    #[arg(long, default_value_t = 20_000)]
    pub cold_tokens: usize,
    /// Rounds: every scenario runs once per round, alternating; the report gives medians.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// The load generators: `reqwest` (in this process), `oha` (its own process; skipped
    /// with a note when not installed), or both.
    #[arg(long, value_delimiter = ',', default_value = "reqwest,oha")]
    pub generators: Vec<String>,
    /// Comma-separated: bank, nginx-plain, bare, no-auth, hot, cold, storm, nginx, as, jwt,
    /// limits, limits-fleet, traced-1, traced-100 (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_scenario)]
    pub scenarios: Vec<Scenario>,
    /// Cached-token counts for the memory measurement (comma-separated; empty to skip).
    #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
    pub memory: Vec<String>,
    /// Also write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    Scenario::parse(s.trim()).ok_or_else(|| format!("unknown scenario `{s}`"))
}

impl BenchArgs {
    /// The options these arguments ask for; `binary` runs the gateways and the bank.
    pub fn options(self, binary: PathBuf) -> Result<BenchOptions, String> {
        let memory = self
            .memory
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>().map_err(|_| format!("`{s}` is not a count")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BenchOptions {
            concurrency: self.concurrency,
            duration: Duration::from_secs(self.duration.max(1)),
            max_requests: self.requests,
            hot_tokens: self.hot_tokens,
            cold_tokens: self.cold_tokens,
            scenarios: if self.scenarios.is_empty() { Scenario::ALL.to_vec() } else { self.scenarios },
            memory,
            binary,
            rounds: self.rounds.max(1),
            reqwest: self.generators.iter().any(|g| g.trim() == "reqwest"),
            oha: self.generators.iter().any(|g| g.trim() == "oha"),
        })
    }
}

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub concurrency: usize,
    pub duration: Duration,
    /// At most this many requests per scenario.
    pub max_requests: u64,
    pub hot_tokens: usize,
    /// Tokens minted for the cold scenario (it stops when they are used up).
    pub cold_tokens: usize,
    pub scenarios: Vec<Scenario>,
    /// Cached-token counts at which memory per cached token is measured.
    pub memory: Vec<usize>,
    /// The `fapi-gateway` binary: the gateways and the bank run as their own processes,
    /// as nginx does, so none shares the load generator's threads.
    pub binary: PathBuf,
    /// Rounds of alternating scenarios.
    pub rounds: usize,
    /// Drive with the in-process reqwest generator.
    pub reqwest: bool,
    /// Drive with oha too, where installed.
    pub oha: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            concurrency: 16,
            duration: Duration::from_secs(10),
            max_requests: 1_000_000,
            hot_tokens: 100,
            cold_tokens: 20_000,
            scenarios: Scenario::ALL.to_vec(),
            memory: vec![100_000, 1_000_000],
            binary: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("fapi-gateway")),
            rounds: 3,
            reqwest: true,
            oha: true,
        }
    }
}

/// One scenario's figures from one generator in one round.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub scenario: &'static str,
    /// `reqwest` or `oha`.
    pub generator: &'static str,
    pub round: usize,
    /// CPU seconds of the proxy's (or bank's) processes: user, system.
    pub cpu: (f64, f64),
    /// The machine's steal share during the run, 0..1.
    pub steal: f64,
    /// One-minute load average at its end.
    pub load: f64,
    pub requests: u64,
    pub ok: u64,
    /// 401/403: expected in the revocation storm.
    pub refused: u64,
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub cache_hit_ratio: Option<f64>,
    pub introspection_calls: Option<u64>,
    pub distinct_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every run, in the order they ran.
    pub scenarios: Vec<Measured>,
    /// Per scenario and generator, the medians over the rounds.
    pub medians: Vec<Medians>,
    pub ratios: Vec<(String, f64)>,
    /// (cached tokens, bytes of RSS growth per cached token).
    pub memory: Vec<(usize, f64)>,
    pub notes: Vec<String>,
}

/// The `i`th request of a scenario on a client, or none when the scenario is done.
pub(crate) type Target = Arc<dyn Fn(&reqwest::Client, u64) -> Option<reqwest::RequestBuilder> + Send + Sync>;

/// Drives `concurrency` keep-alive connections until `duration` or `max` requests.
pub(crate) async fn drive(clients: &[reqwest::Client], duration: Duration, max: u64, target: Target) -> Measured {
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for client in clients {
        let (client, next, target) = (client.clone(), next.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let (mut ok, mut refused, mut errors) = (0u64, 0u64, 0u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max || Instant::now() >= deadline {
                    break;
                }
                let Some(request) = target(&client, i) else { break };
                let t0 = Instant::now();
                let outcome = match request.send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        match r.bytes().await {
                            Ok(_) => Some(status),
                            Err(_) => None,
                        }
                    }
                    Err(_) => None,
                };
                latencies.push(t0.elapsed().as_micros() as u32);
                match outcome {
                    Some(200) => ok += 1,
                    Some(401) | Some(403) => refused += 1,
                    _ => errors += 1,
                }
            }
            (latencies, ok, refused, errors)
        }));
    }
    let mut all = Vec::new();
    let mut m = Measured::default();
    for t in tasks {
        if let Ok((lat, ok, refused, errors)) = t.await {
            all.extend(lat);
            m.ok += ok;
            m.refused += refused;
            m.errors += errors;
        }
    }
    m.seconds = started.elapsed().as_secs_f64().min(duration.as_secs_f64().max(started.elapsed().as_secs_f64()));
    m.requests = all.len() as u64;
    m.rps = m.requests as f64 / m.seconds.max(1e-9);
    all.sort_unstable();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 * p).ceil() as usize).clamp(1, all.len()) - 1;
        all[i] as f64 / 1000.0
    };
    (m.p50_ms, m.p90_ms, m.p99_ms, m.p999_ms) = (pct(0.50), pct(0.90), pct(0.99), pct(0.999));
    m
}

pub(crate) fn pick_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free loopback port")
}

/// Writes a gateway configuration for the benchmark into `dir`.
pub(crate) fn gateway_config(
    dir: &Path,
    fixtures: &Fixtures,
    bank: std::net::SocketAddr,
    public: bool,
    admin: std::net::SocketAddr,
    grant_jwt: bool,
) -> Result<(PathBuf, std::net::SocketAddr), String> {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).map_err(|e| e.to_string())?;
    if public {
        // Authorization off: the same paths, public; identity headers under other names,
        // so the client's x-subject reaches the bank as the gateway's would.
        let routes = ["/accounts", "/accounts/{AccountId}", "/balances"]
            .iter()
            .map(|p| format!("[[route]]\npath = \"{p}\"\nconsent = false\npublic = true\n"))
            .collect::<String>();
        let text = format!("[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n{routes}");
        std::fs::write(policies.join("gobank.toml"), text).map_err(|e| e.to_string())?;
    } else {
        for (name, text) in EMBEDDED_POLICIES {
            // Go Bank's policy forwards a grant JWT: kept or taken out, as asked.
            let text: String = if grant_jwt {
                text.to_string()
            } else {
                text.lines().filter(|l| !l.starts_with("forward_jwt")).map(|l| format!("{l}\n")).collect()
            };
            std::fs::write(policies.join(name), text).map_err(|e| e.to_string())?;
        }
    }
    let listen = pick_port();
    let headers = if public {
        "[forwarding.headers]\nconsent_id = \"x-gw-consent-id\"\nclient_id = \"x-gw-client-id\"\nsubject = \"x-gw-subject\"\nscopes = \"x-gw-scopes\"\naccounts = \"x-gw-accounts\"\n"
    } else {
        ""
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
bearer_secret = "bench-admin-secret-0123456789"
[authorization_server]
introspection_endpoint = "https://{as_addr}/introspect"
client_id = "fapi-gateway"
client_secret = "bench-secret"
ca = "{certs}/ca.pem"
max_concurrent_calls = 256
[cache]
max_ttl_seconds = 600
capacity = 5000000
{headers}
[upstreams]
gobank = "http://{gb}"
hyperscalebank = "http://{hs}"
[logging]
level = "warn"
[server]
threads = 2
[grant_jwt]
issuer = "https://fapi-gateway.bench"
[[grant_jwt.keys]]
kid = "bench-1"
private_key_file = "{certs}/grant-jwt.key"
"#,
        certs = dir.parent().unwrap_or(dir).join("certs").display(),
        as_addr = fixtures.authorization_server_addr,
        gb = bank,
        hs = fixtures.hyperscale_bank_addr,
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok((path, listen))
}

/// `n` HTTP/1.1 clients presenting the TPP's certificate, each keeping up to
/// `idle_per_host` connections per host (one per client keeps `n` connections in all).
pub(crate) fn tpp_clients(pki: &DevPki, n: usize, idle_per_host: usize) -> Result<Vec<reqwest::Client>, String> {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut pem = std::fs::read(pki.tpp_cert()).map_err(|e| e.to_string())?;
    pem.extend(std::fs::read(pki.tpp_key()).map_err(|e| e.to_string())?);
    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| e.to_string())?;
    (0..n)
        .map(|_| {
            reqwest::Client::builder()
                .tls_certs_only([ca.clone()])
                .identity(identity.clone())
                .http1_only()
                .pool_max_idle_per_host(idle_per_host)
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// A child process, killed when dropped.
pub(crate) struct Process(std::process::Child);

impl Process {
    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn spawn(binary: &Path, args: &[&str], log: &Path) -> Result<Process, String> {
    let log = std::fs::File::create(log).map_err(|e| e.to_string())?;
    std::process::Command::new(binary)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map(Process)
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))
}

/// The gateway's cache lookups by result, from its admin listener.
async fn lookups(admin: std::net::SocketAddr) -> HashMap<&'static str, u64> {
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth("bench-admin-secret-0123456789")
        .send()
        .await
        .ok();
    let text = match text {
        Some(r) => r.text().await.unwrap_or_default(),
        None => String::new(),
    };
    ["hit", "miss", "coalesced"]
        .into_iter()
        .map(|result| {
            let sample = format!("fapi_gateway_cache_lookups_total{{result=\"{result}\"}} ");
            let value =
                text.lines().find_map(|l| l.strip_prefix(&sample)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            (result, value)
        })
        .collect()
}

const PERMISSIONS: [&str; 2] = ["ReadAccountsBasic", "ReadBalances"];

/// The processes and addresses the scenarios run against.
struct Stage {
    bank: std::net::SocketAddr,
    gateway: std::net::SocketAddr,
    public: std::net::SocketAddr,
    bare: std::net::SocketAddr,
    pids: HashMap<Scenario, u32>,
    nginx_plain: Option<crate::bench_nginx::Nginx>,
    nginx: Option<crate::bench_nginx::Nginx>,
}

/// Median figures of one scenario from one generator over the rounds.
#[derive(Debug, Clone, Default)]
pub struct Medians {
    pub scenario: &'static str,
    pub generator: &'static str,
    pub rounds: usize,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// CPU per request of the proxy's processes, µs (user + system), and its system part.
    pub cpu_us: f64,
    pub kernel_us: f64,
    pub steal: f64,
    pub load: f64,
}

impl Measured {
    /// CPU per request in µs: (user + system, system).
    pub fn cpu_per_request_us(&self) -> (f64, f64) {
        let n = self.requests.max(1) as f64;
        ((self.cpu.0 + self.cpu.1) * 1e6 / n, self.cpu.1 * 1e6 / n)
    }
}

fn medians(runs: &[Measured]) -> Vec<Medians> {
    let mut keys: Vec<(&'static str, &'static str)> = Vec::new();
    for m in runs {
        if !keys.contains(&(m.scenario, m.generator)) {
            keys.push((m.scenario, m.generator));
        }
    }
    keys.into_iter()
        .map(|(scenario, generator)| {
            let these: Vec<&Measured> =
                runs.iter().filter(|m| m.scenario == scenario && m.generator == generator).collect();
            let med = |f: &dyn Fn(&Measured) -> f64| {
                crate::bench_proc::median(&mut these.iter().map(|m| f(m)).collect::<Vec<_>>())
            };
            Medians {
                scenario,
                generator,
                rounds: these.len(),
                rps: med(&|m| m.rps),
                p50_ms: med(&|m| m.p50_ms),
                p99_ms: med(&|m| m.p99_ms),
                cpu_us: med(&|m| m.cpu_per_request_us().0),
                kernel_us: med(&|m| m.cpu_per_request_us().1),
                steal: med(&|m| m.steal),
                load: med(&|m| m.load),
            }
        })
        .collect()
}

/// The median over rounds of `f(a) / f(b)`, each round's pair from the same round.
fn paired_ratio(runs: &[Measured], generator: &str, a: &str, b: &str, f: fn(&Measured) -> f64) -> Option<f64> {
    let mut ratios: Vec<f64> = runs
        .iter()
        .filter(|m| m.scenario == a && m.generator == generator)
        .filter_map(|ma| {
            let mb = runs.iter().find(|m| m.scenario == b && m.generator == generator && m.round == ma.round)?;
            let d = f(mb);
            (d > 0.0).then(|| f(ma) / d)
        })
        .collect();
    (!ratios.is_empty()).then(|| crate::bench_proc::median(&mut ratios))
}

/// Runs the chosen scenarios over the rounds, then the memory measurement.
pub async fn run(options: BenchOptions) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = DevPki::at(&dir.path().join("certs"));
    pki.generate()?;
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("valid");
    // The admin address is only known once the config is written; the hook needs it first.
    let admin_addr = pick_port();
    // The authorization server runs on its own thread (the benchmark mints its tokens
    // directly); the bank, the gateways and the bare proxy are processes of their own.
    let fixture_options = FixtureOptions {
        introspection_client_id: "fapi-gateway".into(),
        introspection_client_secret: "bench-secret".into(),
        token_lifetime: Duration::from_secs(3600),
        revocation_hook: Some(RevocationHook {
            url: format!("http://{admin_addr}/revocations"),
            bearer_secret: "bench-admin-secret-0123456789".into(),
        }),
        consent_storage_secret: None,
    };
    let fixture_pki = pki.clone();
    let (as_runtime, fixtures) = std::thread::spawn(move || -> Result<_, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let addresses =
            FixtureAddresses { authorization_server: any, go_bank: any, hyperscale_bank: any, consent_storage: None };
        let fixtures = rt.block_on(start_fixtures(&fixture_pki, addresses, fixture_options))?;
        Ok((rt, fixtures))
    })
    .join()
    .map_err(|_| "the fixtures' thread panicked".to_string())??;
    let as_handle = as_runtime.handle().clone();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let mut report = Report::default();

    let bank_addr = pick_port();
    let bank = spawn(
        &options.binary,
        &["fixture", "bank", "--bank", "gobank", "--listen", &bank_addr.to_string()],
        &logs.join("bank.log"),
    )?;
    fapi_gateway_server::server::wait_for_listener(bank_addr).await?;
    let (config_path, gateway_addr) =
        gateway_config(&dir.path().join("gateway"), &fixtures, bank_addr, false, admin_addr, false)?;
    GatewayConfig::load(&config_path).map_err(|e| e.to_string())?;
    let config_arg = config_path.display().to_string();
    let gateway = spawn(&options.binary, &["run", "--config", &config_arg], &logs.join("gateway.log"))?;
    let (public_path, public_addr) =
        gateway_config(&dir.path().join("public"), &fixtures, bank_addr, true, pick_port(), false)?;
    let public_arg = public_path.display().to_string();
    let public_gateway = spawn(&options.binary, &["run", "--config", &public_arg], &logs.join("public-gateway.log"))?;
    // The bare proxy: the public gateway's listener settings on an address of its own.
    let (bare_path, bare_addr) =
        gateway_config(&dir.path().join("bare"), &fixtures, bank_addr, true, pick_port(), false)?;
    let bare_arg = bare_path.display().to_string();
    let bare = spawn(
        &options.binary,
        &["fixture", "bare-proxy", "--config", &bare_arg, "--upstream", &bank_addr.to_string()],
        &logs.join("bare-proxy.log"),
    )?;
    for addr in [gateway_addr, admin_addr, public_addr, bare_addr] {
        fapi_gateway_server::server::wait_for_listener(addr).await?;
    }
    // The same gateway with Go Bank's grant JWT on, for `jwt` (its own process).
    let jwt_gateway = if options.scenarios.contains(&Scenario::GrantJwt) {
        Some(
            crate::bench_jwt::start(dir.path(), &options.binary, &fixtures, bank_addr, &logs.join("jwt-gateway.log"))
                .await?,
        )
    } else {
        None
    };
    let mut stage = Stage {
        bank: bank_addr,
        gateway: gateway_addr,
        public: public_addr,
        bare: bare_addr,
        pids: HashMap::from([
            (Scenario::BankDirect, bank.0.id()),
            (Scenario::BareProxy, bare.0.id()),
            (Scenario::GatewayNoAuth, public_gateway.0.id()),
            (Scenario::GatewayHot, gateway.0.id()),
            (Scenario::GatewayCold, gateway.0.id()),
            (Scenario::RevocationStorm, gateway.0.id()),
        ]),
        nginx_plain: None,
        nginx: None,
    };
    use crate::bench_nginx::Setup;
    for (scenario, setup) in [(Scenario::NginxPlain, Setup::Plain), (Scenario::Nginx, Setup::AuthRequest)] {
        if !options.scenarios.contains(&scenario) {
            continue;
        }
        match crate::bench_nginx::start(setup, &pki, bank_addr, fixtures.authorization_server_addr, dir.path()).await {
            Ok(n) => {
                stage.pids.insert(scenario, n.pid());
                if setup == Setup::Plain {
                    stage.nginx_plain = Some(n);
                } else {
                    stage.nginx = Some(n);
                }
            }
            Err(e) => report.notes.push(format!("{}: skipped: {e}", scenario.name())),
        }
    }
    let oha = if options.oha {
        let found = crate::bench_oha::find();
        if found.is_none() {
            report.notes.push("oha: not installed (`cargo install oha --locked`; benches/run.sh does): skipped".into());
        }
        found
    } else {
        None
    };

    let thumbprint = {
        let der =
            fapi_enforcement::client_identity::read_certificates(&pki.tpp_cert()).map_err(|e| e.to_string())?.remove(0);
        fapi_enforcement::client_identity::thumbprint(&der)
    };
    let authz = fixtures.authorization_server.clone();
    let mint = |n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|_| {
                let consent = authz.authorised_consent("financroo", "gobank", &PERMISSIONS, "alice", &["GB-1001"]);
                let token = authz.mint_token("financroo", &consent, "openid accounts", &thumbprint);
                (consent, token)
            })
            .collect()
    };
    let clients = tpp_clients(&pki, options.concurrency.max(1), 1)?;
    let plain: Vec<reqwest::Client> = (0..options.concurrency.max(1))
        .map(|_| reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client"))
        .collect();
    // The public routes and the bare proxy pass the client's headers to the bank as they are.
    let bank_headers = [("x-subject", "alice".to_string()), ("x-consent-accounts", "GB-1001".to_string())];
    // Hot tokens, minted and cached once: the gateway's cache and nginx's proxy_cache.
    let hot: Arc<Vec<(String, String)>> = Arc::new(mint(options.hot_tokens.max(1)));
    for url in [
        Some(format!("https://{gateway_addr}/gobank/accounts")),
        stage.nginx.as_ref().map(|n| format!("https://{}/gobank/accounts", n.addr)),
        jwt_gateway.as_ref().map(|(_, addr)| format!("https://{addr}/gobank/accounts")),
    ]
    .into_iter()
    .flatten()
    {
        for (_, t) in hot.iter() {
            let _ = clients[0].get(&url).bearer_auth(t).send().await;
        }
    }

    for round in 0..options.rounds {
        for &scenario in &options.scenarios {
            if scenario == Scenario::GrantJwt {
                if let (Some((jwt, jwt_addr)), true) = (&jwt_gateway, options.reqwest) {
                    let sides = [(gateway_addr, gateway.pid()), (*jwt_addr, jwt.pid())];
                    let (duration, max) = (options.duration, options.max_requests);
                    for m in crate::bench_jwt::round(&clients, sides, hot.clone(), duration, max, round).await {
                        eprintln!("{}", row(&m));
                        report.scenarios.push(m);
                    }
                }
                continue;
            }
            // The traffic variants run their own alternating rounds, once, after these.
            if crate::bench_traffic::variant_of(scenario).is_some() {
                continue;
            }
            let Some(url) = scenario_url(scenario, &stage, fixtures.authorization_server_addr) else { continue };
            let pid = stage.pids.get(&scenario).copied();
            let mut max = options.max_requests;
            let mut distinct = None;
            let mut storm_consents: Vec<String> = Vec::new();
            let target: Target = match scenario {
                Scenario::BankDirect | Scenario::NginxPlain | Scenario::BareProxy | Scenario::GatewayNoAuth => {
                    let headers = bank_headers.clone();
                    Arc::new(move |c: &reqwest::Client, _| {
                        Some(headers.iter().fold(c.get(&url), |r, (k, v)| r.header(*k, v)))
                    })
                }
                Scenario::GatewayHot | Scenario::Nginx => {
                    distinct = Some(hot.len() as u64);
                    let hot = hot.clone();
                    Arc::new(move |c: &reqwest::Client, i| {
                        Some(c.get(&url).bearer_auth(&hot[(i as usize) % hot.len()].1))
                    })
                }
                Scenario::RevocationStorm => {
                    // Tokens of their own, so that the hot ones stay authorised.
                    let tokens = Arc::new(mint(options.hot_tokens.max(2)));
                    for (_, t) in tokens.iter() {
                        let _ = clients[0].get(&url).bearer_auth(t).send().await;
                    }
                    distinct = Some(tokens.len() as u64);
                    storm_consents = tokens.iter().map(|(c, _)| c.clone()).collect();
                    Arc::new(move |c: &reqwest::Client, i| {
                        Some(c.get(&url).bearer_auth(&tokens[(i as usize) % tokens.len()].1))
                    })
                }
                // Measured above and after the rounds.
                Scenario::GrantJwt
                | Scenario::RateLimited
                | Scenario::RateLimitedFleet
                | Scenario::Traced1
                | Scenario::Traced100 => continue,
                Scenario::GatewayCold | Scenario::AuthorizationServer => {
                    let tokens = Arc::new(mint(options.cold_tokens.max(1)));
                    max = max.min(tokens.len() as u64);
                    if scenario == Scenario::GatewayCold {
                        Arc::new(move |c: &reqwest::Client, i| {
                            tokens.get(i as usize).map(|(_, t)| c.get(&url).bearer_auth(t))
                        })
                    } else {
                        Arc::new(move |c: &reqwest::Client, i| {
                            tokens.get(i as usize).map(|(_, t)| {
                                c.post(&url)
                                    .basic_auth("fapi-gateway", Some("bench-secret"))
                                    .form(&[("token", t.as_str())])
                            })
                        })
                    }
                }
            };
            if options.reqwest {
                let before = lookups(admin_addr).await;
                let calls_before = fixtures.authorization_server.introspection_calls();
                let storm = (scenario == Scenario::RevocationStorm).then(|| {
                    // Half the consents are revoked, evenly over the run.
                    let authz = fixtures.authorization_server.clone();
                    let consents = std::mem::take(&mut storm_consents);
                    let every = options.duration / (consents.len() as u32 + 1).max(2);
                    as_handle.spawn(async move {
                        for c in consents.iter().step_by(2) {
                            tokio::time::sleep(every).await;
                            authz.revoke_consent(c).await;
                        }
                    })
                });
                let sample = crate::bench_proc::Sample::start(pid);
                let direct = matches!(scenario, Scenario::BankDirect);
                let mut m = drive(if direct { &plain } else { &clients }, options.duration, max, target).await;
                let cost = sample.finish();
                if let Some(s) = storm {
                    s.abort();
                }
                m.scenario = scenario.name();
                m.generator = "reqwest";
                m.round = round;
                (m.cpu, m.steal, m.load) = (cost.cpu, cost.steal, cost.load);
                if matches!(scenario, Scenario::GatewayHot | Scenario::GatewayCold | Scenario::RevocationStorm) {
                    let after = lookups(admin_addr).await;
                    let delta = |k: &str| after[k].saturating_sub(before[k]);
                    let total = delta("hit") + delta("miss") + delta("coalesced");
                    m.cache_hit_ratio = (total > 0).then(|| delta("hit") as f64 / total as f64);
                }
                if matches!(
                    scenario,
                    Scenario::GatewayHot | Scenario::GatewayCold | Scenario::RevocationStorm | Scenario::Nginx
                ) {
                    m.introspection_calls = Some(fixtures.authorization_server.introspection_calls() - calls_before);
                }
                m.distinct_tokens = if scenario == Scenario::GatewayCold { Some(m.requests) } else { distinct };
                eprintln!("{}", row(&m));
                report.scenarios.push(m);
            }
            if let (Some(oha), true) = (&oha, scenario.oha()) {
                let url = scenario_url(scenario, &stage, fixtures.authorization_server_addr).unwrap_or_default();
                let token = matches!(scenario, Scenario::GatewayHot | Scenario::Nginx).then(|| hot[0].1.as_str());
                let headers: &[(&str, String)] = if token.is_none() { &bank_headers } else { &[] };
                let sample = crate::bench_proc::Sample::start(pid);
                let run =
                    crate::bench_oha::run(oha, &pki, &url, token, headers, options.concurrency, options.duration).await;
                let cost = sample.finish();
                match run {
                    Ok(o) => {
                        let m = Measured {
                            scenario: scenario.name(),
                            generator: "oha",
                            round,
                            cpu: cost.cpu,
                            steal: cost.steal,
                            load: cost.load,
                            requests: o.requests,
                            ok: o.requests - o.not_ok - o.errors,
                            errors: o.errors,
                            refused: o.not_ok,
                            seconds: o.seconds,
                            rps: o.rps,
                            p50_ms: o.p50_ms,
                            p90_ms: o.p90_ms,
                            p99_ms: o.p99_ms,
                            p999_ms: o.p999_ms,
                            ..Measured::default()
                        };
                        eprintln!("{}", row(&m));
                        report.scenarios.push(m);
                    }
                    Err(e) => report.notes.push(format!("{} (oha, round {}): {e}", scenario.name(), round + 1)),
                }
            }
        }
    }
    // Rate limits and tracing: each a variant gateway against the hot one, in rounds of its own.
    let mut traffic_ratios = Vec::new();
    for &scenario in &options.scenarios {
        let Some(what) = crate::bench_traffic::variant_of(scenario) else { continue };
        let baseline = crate::bench_traffic::Baseline {
            url: format!("https://{gateway_addr}/gobank/accounts"),
            process: &gateway,
        };
        let compared = crate::bench_traffic::compare(
            scenario,
            dir.path(),
            &options.binary,
            &fixtures,
            bank_addr,
            &baseline,
            &clients,
            hot.clone(),
            options.duration,
            options.max_requests,
        )
        .await;
        match compared {
            Ok(c) => {
                traffic_ratios.push((
                    format!("throughput: {what} / off (median of {} alternating rounds)", crate::bench_traffic::ROUNDS),
                    c.ratio,
                ));
                report.notes.push(c.note);
                eprintln!("{}", row(&c.measured));
                report.scenarios.push(c.measured);
            }
            Err(e) => report.notes.push(format!("{}: failed: {e}", scenario.name())),
        }
    }
    drop(jwt_gateway);
    drop(stage);
    report.medians = medians(&report.scenarios);
    ratios(&mut report);
    report.ratios.extend(traffic_ratios);
    drop(fixtures);
    as_runtime.shutdown_background();

    for n in &options.memory {
        report.memory.push((*n, memory_per_cached_token(*n).await));
    }
    Ok(report)
}

/// Where a scenario's requests go, if its server runs.
fn scenario_url(scenario: Scenario, stage: &Stage, authorization_server: std::net::SocketAddr) -> Option<String> {
    Some(match scenario {
        Scenario::BankDirect => format!("http://{}/accounts", stage.bank),
        Scenario::NginxPlain => format!("https://{}/gobank/accounts", stage.nginx_plain.as_ref()?.addr),
        Scenario::BareProxy => format!("https://{}/accounts", stage.bare),
        Scenario::GatewayNoAuth => format!("https://{}/gobank/accounts", stage.public),
        Scenario::GatewayHot | Scenario::GatewayCold | Scenario::RevocationStorm => {
            format!("https://{}/gobank/accounts", stage.gateway)
        }
        Scenario::Nginx => format!("https://{}/gobank/accounts", stage.nginx.as_ref()?.addr),
        Scenario::AuthorizationServer => format!("https://{authorization_server}/introspect"),
        // Driven by bench_jwt and bench_traffic, not here.
        Scenario::GrantJwt
        | Scenario::RateLimited
        | Scenario::RateLimitedFleet
        | Scenario::Traced1
        | Scenario::Traced100 => return None,
    })
}

/// The target ratios, each the median over rounds of the pair measured in the same round.
fn ratios(report: &mut Report) {
    let runs = &report.scenarios;
    let rps = |m: &Measured| m.rps;
    let cpu = |m: &Measured| m.cpu_per_request_us().0;
    let p99 = |m: &Measured| m.p99_ms;
    let mut out = Vec::new();
    for g in ["reqwest", "oha"] {
        let mut add = |name: &str, a: &str, b: &str, f: fn(&Measured) -> f64| {
            if let Some(r) = paired_ratio(runs, g, a, b, f) {
                out.push((format!("{g}: {name}"), r));
            }
        };
        add("CPU/request: authorization off / bare pingora (target <= 1.05)", "gateway-no-auth", "pingora-bare", cpu);
        add("req/s: authorization off / bare pingora (target >= 0.95)", "gateway-no-auth", "pingora-bare", rps);
        add("req/s: hot tokens / authorization off (target >= 0.95)", "gateway-hot", "gateway-no-auth", rps);
        add("CPU/request: hot tokens / authorization off", "gateway-hot", "gateway-no-auth", cpu);
        let [jwt_off, jwt_on] = crate::bench_jwt::SIDES;
        add("req/s: hot with the grant JWT / without (target >= 0.95)", jwt_on, jwt_off, rps);
        add("CPU/request: hot with the grant JWT / without", jwt_on, jwt_off, cpu);
        add("req/s: fapi-gateway hot / nginx auth_request (target >= 2)", "gateway-hot", "nginx-auth-request", rps);
        add("p99: fapi-gateway hot / nginx auth_request (target <= 1)", "gateway-hot", "nginx-auth-request", p99);
        add("CPU/request: fapi-gateway hot / nginx auth_request", "gateway-hot", "nginx-auth-request", cpu);
        add("CPU/request: bare pingora / nginx plain", "pingora-bare", "nginx-plain", cpu);
        add("req/s: bare pingora / nginx plain", "pingora-bare", "nginx-plain", rps);
        add(
            "req/s: cold (introspection misses) / authorization server direct",
            "gateway-cold",
            "as-introspection",
            rps,
        );
    }
    for (name, target) in [("gateway-cold", "(target 1)"), ("gateway-hot", "after warm-up (target 0)")] {
        let (calls, distinct) =
            runs.iter().filter(|m| m.scenario == name && m.generator == "reqwest").fold((0u64, 0u64), |(c, d), m| {
                (c + m.introspection_calls.unwrap_or(0), d + m.distinct_tokens.unwrap_or(0))
            });
        if distinct > 0 {
            out.push((
                format!("introspection calls per distinct token, {} {target}", name.trim_start_matches("gateway-")),
                calls as f64 / distinct as f64,
            ));
        }
    }
    report.ratios = out;
}

/// One run as a table row (also printed as it finishes).
fn row(m: &Measured) -> String {
    let (cpu, kernel) = m.cpu_per_request_us();
    format!(
        "{:<19} {:<7} {:>2} {:>8} {:>8.0} {:>7.2} {:>7.2} {:>7.1} {:>6.1} {:>6.1} {:>5.2} {:>6} {:>7} {:>6} {:>7}",
        m.scenario,
        m.generator,
        m.round + 1,
        m.requests,
        m.rps,
        m.p50_ms,
        m.p99_ms,
        cpu,
        kernel,
        m.steal * 100.0,
        m.load,
        m.errors,
        m.refused,
        m.cache_hit_ratio.map(|r| format!("{:.1}", r * 100.0)).unwrap_or_else(|| "-".into()),
        m.introspection_calls.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
    )
}

const ROW_HEADER: &str = "scenario            gen     rd requests    req/s  p50 ms  p99 ms  CPU µs  sys µs steal%  load errors refused  hit %  AS calls";

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// An introspection response shaped as the demo's UK tokens are, unique per token.
struct Synthetic(AtomicU64);

#[async_trait::async_trait]
impl Introspector for Synthetic {
    async fn introspect(&self, _token: &str) -> Result<TokenInfo, IntrospectionError> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        TokenInfo::from_response(json!({
            "active": true, "scope": "openid accounts", "client_id": "financroo", "sub": "alice",
            "token_type": "Bearer", "exp": 4_000_000_000u64, "iat": 1_795_000_000u64,
            "cnf": {"x5t#S256": "hYzMMLDCbS4kSt3vjmYlgh_28ywpqFhrLbYGh4Lvztg"},
            "ConsentId": format!("consent-{n:012}"), "Status": "Authorised",
            "Permissions": ["ReadAccountsBasic", "ReadBalances", "ReadTransactionsBasic", "ReadTransactionsCredits", "ReadTransactionsDebits"],
            "AccountIDs": ["GB-1001", "GB-1002"]
        }))
    }
}

/// RSS growth per entry after caching `n` distinct tokens.
pub async fn memory_per_cached_token(n: usize) -> f64 {
    let config = CacheConfig {
        max_ttl: Duration::from_secs(3600),
        inactive_ttl: Duration::from_secs(5),
        capacity: n as u64 * 2,
    };
    let cache = Arc::new(IntrospectionCache::new(
        "bench",
        &config,
        Arc::new(Synthetic(AtomicU64::new(0))),
        Arc::new(Metrics::new()),
    ));
    let tokens: Vec<String> = (0..n).map(|i| format!("bench-token-{i:016}-{}", "x".repeat(22))).collect();
    let before = rss();
    for t in &tokens {
        let key = cache.key(t);
        let _ = cache.lookup(key, t, None).await;
    }
    cache.run_pending_tasks().await;
    let after = rss();
    assert!(cache.entry_count() as usize >= n * 99 / 100, "entries were evicted during the measurement");
    drop(tokens);
    (after.saturating_sub(before)) as f64 / n as f64
}

impl Report {
    /// Tables for people: every run, then the medians per scenario and generator, the
    /// ratios, memory and notes.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "every run (CPU µs = the proxy's processes' utime+stime per request, sys µs its kernel part):"
        );
        let _ = writeln!(out, "{ROW_HEADER}");
        for m in &self.scenarios {
            let _ = writeln!(out, "{}", row(m));
        }
        let _ = writeln!(out, "\nmedians over rounds:");
        let _ = writeln!(
            out,
            "{:<19} {:<7} {:>6} {:>8} {:>7} {:>7} {:>7} {:>6} {:>6} {:>5}",
            "scenario", "gen", "rounds", "req/s", "p50 ms", "p99 ms", "CPU µs", "sys µs", "steal%", "load"
        );
        for m in &self.medians {
            let _ = writeln!(
                out,
                "{:<19} {:<7} {:>6} {:>8.0} {:>7.2} {:>7.2} {:>7.1} {:>6.1} {:>6.1} {:>5.2}",
                m.scenario,
                m.generator,
                m.rounds,
                m.rps,
                m.p50_ms,
                m.p99_ms,
                m.cpu_us,
                m.kernel_us,
                m.steal * 100.0,
                m.load
            );
        }
        let _ = writeln!(out, "\nratios (median over rounds of same-round pairs):");
        for (name, value) in &self.ratios {
            let _ = writeln!(out, "{name}: {value:.3}");
        }
        for (n, bytes) in &self.memory {
            let _ = writeln!(out, "memory per cached token at {n}: {bytes:.0} bytes (target <= 512)");
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        out
    }

    pub fn json(&self) -> Value {
        json!({
            "runs": self.scenarios.iter().map(|m| json!({
                "scenario": m.scenario, "generator": m.generator, "round": m.round + 1,
                "requests": m.requests, "ok": m.ok, "refused": m.refused, "errors": m.errors,
                "seconds": m.seconds, "requests_per_second": m.rps,
                "latency_ms": {"p50": m.p50_ms, "p90": m.p90_ms, "p99": m.p99_ms, "p99_9": m.p999_ms},
                "cpu_seconds": {"user": m.cpu.0, "system": m.cpu.1},
                "cpu_us_per_request": m.cpu_per_request_us().0, "system_us_per_request": m.cpu_per_request_us().1,
                "steal": m.steal, "load_average": m.load,
                "cache_hit_ratio": m.cache_hit_ratio, "introspection_calls": m.introspection_calls,
                "distinct_tokens": m.distinct_tokens,
            })).collect::<Vec<_>>(),
            "medians": self.medians.iter().map(|m| json!({
                "scenario": m.scenario, "generator": m.generator, "rounds": m.rounds,
                "requests_per_second": m.rps, "p50_ms": m.p50_ms, "p99_ms": m.p99_ms,
                "cpu_us_per_request": m.cpu_us, "system_us_per_request": m.kernel_us,
                "steal": m.steal, "load_average": m.load,
            })).collect::<Vec<_>>(),
            "ratios": self.ratios.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "memory": self.memory.iter().map(|(n, b)| json!({"cached_tokens": n, "bytes_per_token": b})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}
