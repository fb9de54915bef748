//! `fapi-gateway bench`: the load benchmark. Everything runs on loopback in one process:
//! the mock authorization server, Go Bank, a gateway with authorization and one without
//! (public routes: TLS and proxying only), and optionally nginx with the `auth_request`
//! introspection pattern. Each scenario drives HTTPS with the TPP's client certificate over
//! keep-alive connections; all scenarios run in the same invocation, so their ratios are
//! meaningful on a noisy machine.

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

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// The bank directly (plain HTTP): the backend's ceiling.
    BankDirect,
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
    /// Hot tokens with the grant JWT (`forward_jwt`) off and on, in alternating rounds.
    GrantJwt,
    /// The hot path with one rate limit per TPP, against the plain hot path (rounds).
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
    pub const ALL: [Scenario; 11] = [
        Scenario::BankDirect,
        Scenario::GatewayNoAuth,
        Scenario::GatewayHot,
        Scenario::GatewayCold,
        Scenario::RevocationStorm,
        Scenario::Nginx,
        Scenario::GrantJwt,
        Scenario::RateLimited,
        Scenario::RateLimitedFleet,
        Scenario::Traced1,
        Scenario::Traced100,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::BankDirect => "bank-direct",
            Scenario::GatewayNoAuth => "gateway-no-auth",
            Scenario::GatewayHot => "gateway-hot",
            Scenario::GatewayCold => "gateway-cold",
            Scenario::RevocationStorm => "revocation-storm",
            Scenario::Nginx => "nginx-auth-request",
            Scenario::GrantJwt => "gateway-hot-jwt",
            Scenario::RateLimited => "gateway-rate-limited",
            Scenario::RateLimitedFleet => "gateway-rate-limited-fleet",
            Scenario::Traced1 => "gateway-traced-1pct",
            Scenario::Traced100 => "gateway-traced-100pct",
        }
    }

    /// A full name, or its short form: bank, no-auth, hot, cold, storm, nginx.
    pub fn parse(s: &str) -> Option<Scenario> {
        let short = |c: Scenario| match c {
            Scenario::BankDirect => "bank",
            Scenario::GatewayNoAuth => "no-auth",
            Scenario::GatewayHot => "hot",
            Scenario::GatewayCold => "cold",
            Scenario::RevocationStorm => "storm",
            Scenario::Nginx => "nginx",
            Scenario::GrantJwt => "jwt",
            Scenario::RateLimited => "limits",
            Scenario::RateLimitedFleet => "limits-fleet",
            Scenario::Traced1 => "traced-1",
            Scenario::Traced100 => "traced-100",
        };
        Scenario::ALL.into_iter().find(|c| c.name() == s || short(*c) == s)
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
    /// Comma-separated: bank, no-auth, hot, cold, storm, nginx, jwt, limits, limits-fleet,
    /// traced-1, traced-100 (default: all).
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
        }
    }
}

/// One scenario's figures.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    pub scenario: &'static str,
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
    pub scenarios: Vec<Measured>,
    pub ratios: Vec<(String, f64)>,
    /// (cached tokens, bytes of RSS growth per cached token).
    pub memory: Vec<(usize, f64)>,
    pub notes: Vec<String>,
}

/// What a request of a scenario is: URL, token, extra headers.
pub(crate) type Target = (String, Option<String>, Vec<(&'static str, String)>);

/// Drives `concurrency` keep-alive connections until `duration` or `max` requests.
pub(crate) async fn drive(
    clients: &[reqwest::Client],
    duration: Duration,
    max: u64,
    target: Arc<dyn Fn(u64) -> Option<Target> + Send + Sync>,
) -> Measured {
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
                let Some((url, token, headers)) = target(i) else { break };
                let mut request = client.get(&url);
                if let Some(t) = token {
                    request = request.bearer_auth(t);
                }
                for (k, v) in headers {
                    request = request.header(k, v);
                }
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

fn tpp_clients(pki: &DevPki, n: usize) -> Result<Vec<reqwest::Client>, String> {
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
                .pool_max_idle_per_host(1)
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

/// Runs the chosen scenarios and the memory measurement.
pub async fn run(options: BenchOptions) -> Result<Report, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let pki = DevPki::at(&dir.path().join("certs"));
    pki.generate()?;
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("valid");
    let gateway_dir = dir.path().join("gateway");
    let public_dir = dir.path().join("public");
    // The admin address is only known once the config is written; the hook needs it first.
    let admin_addr = pick_port();
    // The authorization server runs on its own threads (the benchmark mints its tokens
    // directly); the bank and the gateways are processes of their own.
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
    let bank_addr = pick_port();
    let _bank = spawn(
        &options.binary,
        &["fixture", "bank", "--bank", "gobank", "--listen", &bank_addr.to_string()],
        &logs.join("bank.log"),
    )?;
    fapi_gateway_server::server::wait_for_listener(bank_addr).await?;
    let (config_path, gateway_addr) = gateway_config(&gateway_dir, &fixtures, bank_addr, false, admin_addr, false)?;
    GatewayConfig::load(&config_path).map_err(|e| e.to_string())?;
    let config_arg = config_path.display().to_string();
    let gateway = spawn(&options.binary, &["run", "--config", &config_arg], &logs.join("gateway.log"))?;
    let (public_path, public_addr) = gateway_config(&public_dir, &fixtures, bank_addr, true, pick_port(), false)?;
    let public_arg = public_path.display().to_string();
    let _public_gateway = spawn(&options.binary, &["run", "--config", &public_arg], &logs.join("public-gateway.log"))?;
    for addr in [gateway_addr, admin_addr, public_addr] {
        fapi_gateway_server::server::wait_for_listener(addr).await?;
    }
    // The same gateway with Go Bank's grant JWT on, for `jwt` (its own process).
    let mut jwt_gateway = None;
    if options.scenarios.contains(&Scenario::GrantJwt) {
        let (path, addr) =
            gateway_config(&dir.path().join("jwt-gateway"), &fixtures, bank_addr, false, pick_port(), true)?;
        let arg = path.display().to_string();
        let process = spawn(&options.binary, &["run", "--config", &arg], &logs.join("jwt-gateway.log"))?;
        fapi_gateway_server::server::wait_for_listener(addr).await?;
        jwt_gateway = Some((process, addr));
    }

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
    let clients = tpp_clients(&pki, options.concurrency.max(1))?;
    let plain: Vec<reqwest::Client> = (0..options.concurrency.max(1))
        .map(|_| reqwest::Client::builder().pool_max_idle_per_host(1).build().expect("client"))
        .collect();
    let bank_headers = || vec![("x-subject", "alice".to_string()), ("x-consent-accounts", "GB-1001".to_string())];
    let mut report = Report::default();
    let mut by_name: HashMap<&'static str, f64> = HashMap::new();

    for scenario in &options.scenarios {
        if *scenario == Scenario::GrantJwt {
            let Some((_, jwt_addr)) = &jwt_gateway else { continue };
            let tokens = Arc::new(mint(options.hot_tokens.max(1)));
            let urls =
                [format!("https://{gateway_addr}/gobank/accounts"), format!("https://{jwt_addr}/gobank/accounts")];
            for url in &urls {
                for (_, t) in tokens.iter() {
                    let _ = clients[0].get(url).bearer_auth(t).send().await;
                }
            }
            let pids = [gateway.0.id(), jwt_gateway.as_ref().map_or(0, |(p, _)| p.0.id())];
            let (off, on) = grant_jwt_rounds(&clients, &urls, pids, tokens, &options, &mut report).await;
            if off.rps > 0.0 {
                report.ratios.push((
                    "throughput: hot with the grant JWT / without, medians of alternating rounds (target >= 0.95)"
                        .into(),
                    on.rps / off.rps,
                ));
            }
            report.scenarios.push(off);
            report.scenarios.push(on);
            continue;
        }
        let hot_url = format!("https://{gateway_addr}/gobank/accounts");
        if let Some(what) = crate::bench_traffic::variant_of(*scenario) {
            let tokens = Arc::new(mint(options.hot_tokens.max(1)));
            for (_, t) in tokens.iter() {
                let _ = clients[0].get(&hot_url).bearer_auth(t).send().await;
            }
            let baseline = crate::bench_traffic::Baseline { url: hot_url.clone(), process: &gateway };
            let compared = crate::bench_traffic::compare(
                *scenario,
                dir.path(),
                &options.binary,
                &fixtures,
                bank_addr,
                &baseline,
                &clients,
                tokens,
                options.duration,
                options.max_requests,
            )
            .await;
            match compared {
                Ok(c) => {
                    report.ratios.push((
                        format!(
                            "throughput: {what} / off (median of {} alternating rounds)",
                            crate::bench_traffic::ROUNDS
                        ),
                        c.ratio,
                    ));
                    report.notes.push(c.note);
                    report.scenarios.push(c.measured);
                }
                Err(e) => report.notes.push(format!("{}: failed: {e}", scenario.name())),
            }
            continue;
        }
        let mut distinct = None;
        let mut nginx = None;
        let mut max = options.max_requests;
        let mut direct = false;
        let mut storm_consents: Vec<String> = Vec::new();
        // Prepare: tokens, warm caches; then measure from a clean snapshot.
        let target: Arc<dyn Fn(u64) -> Option<Target> + Send + Sync> = match scenario {
            Scenario::BankDirect => {
                direct = true;
                let url = format!("http://{bank_addr}/accounts");
                Arc::new(move |_| Some((url.clone(), None, bank_headers())))
            }
            Scenario::GatewayNoAuth => {
                let url = format!("https://{public_addr}/gobank/accounts");
                Arc::new(move |_| Some((url.clone(), None, bank_headers())))
            }
            // Measured in rounds of its own, above.
            Scenario::GrantJwt => continue,
            Scenario::GatewayHot | Scenario::RevocationStorm | Scenario::Nginx => {
                let url = if *scenario == Scenario::Nginx {
                    match crate::bench_nginx::start(&pki, bank_addr, fixtures.authorization_server_addr, dir.path())
                        .await
                    {
                        Ok(n) => {
                            let url = format!("https://{}/gobank/accounts", n.addr);
                            nginx = Some(n);
                            url
                        }
                        Err(e) => {
                            report.notes.push(format!("{}: skipped: {e}", scenario.name()));
                            continue;
                        }
                    }
                } else {
                    hot_url.clone()
                };
                let tokens: Vec<(String, String)> = mint(options.hot_tokens.max(1));
                distinct = Some(tokens.len() as u64);
                if *scenario == Scenario::RevocationStorm {
                    storm_consents = tokens.iter().map(|(c, _)| c.clone()).collect();
                }
                for (_, t) in &tokens {
                    let _ = clients[0].get(&url).bearer_auth(t).send().await;
                }
                let tokens = Arc::new(tokens);
                Arc::new(move |i| Some((url.clone(), Some(tokens[(i as usize) % tokens.len()].1.clone()), vec![])))
            }
            // Measured in rounds against the hot path, above.
            Scenario::RateLimited | Scenario::RateLimitedFleet | Scenario::Traced1 | Scenario::Traced100 => continue,
            Scenario::GatewayCold => {
                let tokens = Arc::new(mint(options.cold_tokens.max(1)));
                max = max.min(tokens.len() as u64);
                let url = hot_url.clone();
                Arc::new(move |i| tokens.get(i as usize).map(|(_, t)| (url.clone(), Some(t.clone()), vec![])))
            }
        };
        let before = lookups(admin_addr).await;
        let calls_before = fixtures.authorization_server.introspection_calls();
        let storm = (*scenario == Scenario::RevocationStorm).then(|| {
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
        let mut m = drive(if direct { &plain } else { &clients }, options.duration, max, target).await;
        if let Some(s) = storm {
            s.abort();
        }
        drop(nginx);
        m.scenario = scenario.name();
        if matches!(scenario, Scenario::GatewayHot | Scenario::GatewayCold | Scenario::RevocationStorm) {
            let after = lookups(admin_addr).await;
            let delta = |k: &str| after[k].saturating_sub(before[k]);
            let total = delta("hit") + delta("miss") + delta("coalesced");
            m.cache_hit_ratio = (total > 0).then(|| delta("hit") as f64 / total as f64);
        }
        if !matches!(scenario, Scenario::BankDirect | Scenario::GatewayNoAuth) {
            m.introspection_calls = Some(fixtures.authorization_server.introspection_calls() - calls_before);
        }
        m.distinct_tokens = if *scenario == Scenario::GatewayCold { Some(m.requests) } else { distinct };
        by_name.insert(m.scenario, m.rps);
        report.scenarios.push(m);
    }

    let ratio = |a: &str, b: &str| Some(by_name.get(a)? / by_name.get(b)?.max(1e-9));
    if let Some(r) = ratio("gateway-hot", "gateway-no-auth") {
        report.ratios.push(("throughput: hot tokens / authorization off (target >= 0.95)".into(), r));
    }
    if let Some(r) = ratio("gateway-hot", "nginx-auth-request") {
        report.ratios.push(("throughput: fapi-gateway hot / nginx auth_request (target >= 2)".into(), r));
    }
    if let Some(r) = ratio("gateway-no-auth", "bank-direct") {
        report.ratios.push(("throughput: authorization off / bank direct".into(), r));
    }
    if let Some(cold) = report.scenarios.iter().find(|m| m.scenario == "gateway-cold") {
        if let (Some(calls), Some(d)) = (cold.introspection_calls, cold.distinct_tokens) {
            report.ratios.push((
                "introspection calls per distinct token, cold (target 1)".into(),
                calls as f64 / d.max(1) as f64,
            ));
        }
    }
    if let Some(hot) = report.scenarios.iter().find(|m| m.scenario == "gateway-hot") {
        if let (Some(calls), Some(d)) = (hot.introspection_calls, hot.distinct_tokens) {
            report.ratios.push((
                "introspection calls per distinct token, hot after warm-up (target 0)".into(),
                calls as f64 / d.max(1) as f64,
            ));
        }
    }
    drop(fixtures);
    as_runtime.shutdown_background();

    for n in &options.memory {
        report.memory.push((*n, memory_per_cached_token(*n).await));
    }
    Ok(report)
}

/// Rounds of each side of the `jwt` scenario, alternating (off, on, off, on, …).
const GRANT_JWT_ROUNDS: usize = 3;

/// Drives `urls[0]` (grant JWT off) and `urls[1]` (on) in alternating rounds of the
/// scenario's duration each; each side's round with the median throughput.
async fn grant_jwt_rounds(
    clients: &[reqwest::Client],
    urls: &[String; 2],
    pids: [u32; 2],
    tokens: Arc<Vec<(String, String)>>,
    options: &BenchOptions,
    report: &mut Report,
) -> (Measured, Measured) {
    let mut sides: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
    // CPU of each gateway process per request, round by round (steal-proof, unlike req/s).
    let mut cpu: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    for round in 0..GRANT_JWT_ROUNDS * 2 {
        let side = round % 2;
        let (url, tokens) = (urls[side].clone(), tokens.clone());
        let target: Arc<dyn Fn(u64) -> Option<Target> + Send + Sync> =
            Arc::new(move |i| Some((url.clone(), Some(tokens[(i as usize) % tokens.len()].1.clone()), vec![])));
        let cpu_before = process_cpu_seconds(pids[side]);
        let m = drive(clients, options.duration, options.max_requests, target).await;
        let used = process_cpu_seconds(pids[side]) - cpu_before;
        cpu[side].push(used * 1e6 / m.requests.max(1) as f64);
        sides[side].push(m);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (cpu_off, cpu_on) = (median(&mut cpu[0]), median(&mut cpu[1]));
    report.notes.push(format!(
        "gateway-hot-jwt CPU per request (gateway process, median round): off {cpu_off:.1} µs, on {cpu_on:.1} µs (on / off {:.3})",
        cpu_on / cpu_off.max(1e-9)
    ));
    let rps = |side: &Vec<Measured>| side.iter().map(|m| format!("{:.0}", m.rps)).collect::<Vec<_>>().join(", ");
    report.notes.push(format!("gateway-hot-jwt rounds, req/s: off {}; on {}", rps(&sides[0]), rps(&sides[1])));
    let names = ["gateway-hot-jwt-off", "gateway-hot-jwt-on"];
    let mut medians = sides.map(|mut rounds| {
        rounds.sort_by(|a, b| a.rps.total_cmp(&b.rps));
        rounds.remove(rounds.len() / 2)
    });
    for (side, name) in names.iter().enumerate() {
        medians[side].scenario = name;
    }
    report.notes.push(format!(
        "gateway-hot-jwt: {GRANT_JWT_ROUNDS} alternating rounds per side of {} s; each side's median round is reported",
        options.duration.as_secs()
    ));
    let [off, on] = medians;
    (off, on)
}

/// User and system CPU seconds a process has used so far (from `/proc`, 100 ticks a second).
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime: fields 14 and 15 of the line (the 12th and 13th after the name).
    (ticks(11) + ticks(12)) as f64 / 100.0
}

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
    /// A table for people.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<20} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>8} {:>8}",
            "scenario",
            "requests",
            "req/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "p99.9",
            "errors",
            "refused",
            "hit %",
            "AS calls"
        );
        for m in &self.scenarios {
            let _ = writeln!(
                out,
                "{:<20} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>7} {:>8} {:>8}",
                m.scenario,
                m.requests,
                m.rps,
                m.p50_ms,
                m.p90_ms,
                m.p99_ms,
                m.p999_ms,
                m.errors,
                m.refused,
                m.cache_hit_ratio.map(|r| format!("{:.1}", r * 100.0)).unwrap_or_else(|| "-".into()),
                m.introspection_calls.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
            );
        }
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
            "scenarios": self.scenarios.iter().map(|m| json!({
                "scenario": m.scenario, "requests": m.requests, "ok": m.ok, "refused": m.refused, "errors": m.errors,
                "seconds": m.seconds, "requests_per_second": m.rps,
                "latency_ms": {"p50": m.p50_ms, "p90": m.p90_ms, "p99": m.p99_ms, "p99_9": m.p999_ms},
                "cache_hit_ratio": m.cache_hit_ratio, "introspection_calls": m.introspection_calls,
                "distinct_tokens": m.distinct_tokens,
            })).collect::<Vec<_>>(),
            "ratios": self.ratios.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            "memory": self.memory.iter().map(|(n, b)| json!({"cached_tokens": n, "bytes_per_token": b})).collect::<Vec<_>>(),
            "notes": self.notes,
        })
    }
}
