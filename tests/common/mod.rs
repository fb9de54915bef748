//! A whole world on loopback for each test: a fresh dev PKI, the mock authorization
//! server, both mock banks and the gateway, on ephemeral ports, with real TLS clients.

#![allow(dead_code)]

pub mod faulty;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fapi_devkit::demo::{start_fixtures, FixtureAddresses, FixtureOptions, Fixtures};
use fapi_devkit::fixtures::RevocationHook;
use fapi_devkit::pki::DevPki;
use fapi_enforcement::config::GatewayConfig;
use fapi_gateway_server::server::RunningGateway;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const GO_BANK_PERMISSIONS: [&str; 5] =
    ["ReadAccountsBasic", "ReadBalances", "ReadTransactionsBasic", "ReadTransactionsCredits", "ReadTransactionsDebits"];

pub const ADMIN_SECRET: &str = "test-admin-secret-0123456789";

pub struct Options {
    pub max_ttl_seconds: f64,
    pub inactive_ttl_seconds: f64,
    pub capacity: u64,
    /// Whether the authorization server tells the gateway of revoked consents.
    pub revocation_hook: bool,
    /// Replaces the body of [authorization_server] (default: the mock server's, client_secret_basic).
    pub authorization_server: Option<String>,
    /// Use this PKI (copied) instead of a fresh one.
    pub pki: Option<PathBuf>,
    /// Replaces the whole [authorization_server] section (e.g. several servers).
    pub servers_toml: Option<String>,
    /// Text put into policy files' [api] before the gateway starts: (file name, text).
    pub policy_additions: Vec<(String, String)>,
    /// Text appended to policy files (more routes): (file name, text).
    pub policy_appends: Vec<(String, String)>,
    /// Lines added to [listener].
    pub listener_extra: String,
    /// Sections appended to gateway.toml.
    pub config_extra: String,
    /// Lines added to [admin].
    pub admin_extra: String,
    /// A [signals] section with the mock authorization server as transmitter (these lines
    /// added to it), which then pushes SETs instead of calling the JSON endpoint.
    pub signals: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_ttl_seconds: 30.0,
            inactive_ttl_seconds: 5.0,
            capacity: 100_000,
            revocation_hook: true,
            authorization_server: None,
            pki: None,
            servers_toml: None,
            policy_additions: Vec::new(),
            policy_appends: Vec::new(),
            listener_extra: String::new(),
            config_extra: String::new(),
            admin_extra: String::new(),
            signals: None,
        }
    }
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub pki: DevPki,
    pub fixtures: Fixtures,
    pub gateway: RunningGateway,
    pub gateway_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub tpp: reqwest::Client,
    pub other_tpp: reqwest::Client,
}

/// A port for a listener that binds it later (pingora binds by address). Taken below the
/// kernel's ephemeral range, so servers binding port 0 meanwhile cannot be handed it, and
/// from a per-process counter, so two tests of one binary never pick the same one.
pub fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = 20_000 + (std::process::id() % 100) * 100;
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (base - 20_000 + n) % 12_000;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port as u16)) {
            return l.local_addr().unwrap();
        }
    }
}

pub fn repo_path(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Writes a gateway.toml for this world and copies the repository's policies beside it.
pub fn write_config(dir: &Path, fixtures: &Fixtures, gateway: SocketAddr, admin: SocketAddr, o: &Options) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(repo_path("policies")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), policies.join(entry.file_name())).unwrap();
    }
    for (file, text) in &o.policy_additions {
        let path = policies.join(file);
        let mut all = std::fs::read_to_string(&path).unwrap();
        all = all.replacen("[api]\n", &format!("[api]\n{text}\n"), 1);
        std::fs::write(&path, all).unwrap();
    }
    for (file, text) in &o.policy_appends {
        let path = policies.join(file);
        // A file not there yet is a new API.
        let mut all = std::fs::read_to_string(&path).unwrap_or_default();
        all.push_str(text);
        std::fs::write(&path, all).unwrap();
    }
    let text = format!(
        r#"
policies = "policies"
[listener]
address = "{gateway}"
certificate = "certs/gateway.pem"
private_key = "certs/gateway.key"
client_ca = "certs/ca.pem"
{listener_extra}
[admin]
address = "{admin}"
bearer_secret = "{ADMIN_SECRET}"
{admin_extra}
{servers}
[cache]
max_ttl_seconds = {max}
inactive_ttl_seconds = {inactive}
capacity = {capacity}
{grant_jwt}
[upstreams]
gobank = "http://{gb}"
hyperscalebank = "http://{hs}"
[server]
threads = 2
{config_extra}
"#,
        grant_jwt = GRANT_JWT_SECTION,
        listener_extra = o.listener_extra,
        config_extra = o.config_extra,
        admin_extra = o.admin_extra,
        servers = o.servers_toml.clone().unwrap_or_else(|| {
            let body = o
                .authorization_server
                .clone()
                .unwrap_or_else(|| mock_server_section(&fixtures.authorization_server_addr.to_string()));
            format!("[authorization_server]\n{body}")
        }),
        capacity = o.capacity,
        gb = fixtures.go_bank_addr,
        hs = fixtures.hyperscale_bank_addr,
        max = o.max_ttl_seconds,
        inactive = o.inactive_ttl_seconds,
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The `aud` of the SETs the test gateway's receiver takes.
pub const SIGNALS_AUDIENCE: &str = "https://gateway.test/signals";

/// A [signals] section trusting the mock authorization server at `addr` (`extra`: more
/// lines for its transmitter, a `jwks_uri` of its own included).
pub fn signals_section(addr: &str, extra: &str) -> String {
    let jwks = if extra.contains("jwks_uri") { String::new() } else { format!("jwks_uri = \"https://{addr}/jwks\"") };
    format!(
        r#"
[signals]
[[signals.transmitters]]
name = "mock-as"
issuer = "https://{addr}"
audience = "{SIGNALS_AUDIENCE}"
{jwks}
ca = "certs/ca.pem"
{extra}
"#
    )
}
/// The repository's policies have Go Bank forward a grant JWT: signed with the PKI's key.
/// (Written before `[upstreams]`: `config_extra` continues `[server]`.)
pub const GRANT_JWT_SECTION: &str = r#"[grant_jwt]
issuer = "https://fapi-gateway.test"
[[grant_jwt.keys]]
kid = "test-1"
private_key_file = "certs/grant-jwt.key"
"#;

/// The [authorization_server] body for the mock authorization server at `addr`.
pub fn mock_server_section(addr: &str) -> String {
    format!(
        r#"introspection_endpoint = "https://{addr}/introspect"
client_id = "fapi-gateway"
client_secret = "test-secret"
ca = "certs/ca.pem"
timeout_ms = 1000
retry_after_seconds = 3
"#
    )
}

/// A TLS client trusting the dev CA, presenting `identity` (cert, key) if given.
pub fn client(ca: &Path, identity: Option<(&Path, &Path)>, http2: bool) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    let mut b =
        reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(10)).pool_max_idle_per_host(16);
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    if !http2 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

impl World {
    pub async fn start() -> World {
        Self::start_with(Options::default()).await
    }

    /// Like `start_with`; `MOCK_AS` in `servers_toml` stands for the mock server's address.
    pub async fn start_with_servers(options: Options) -> World {
        Self::start_with(options).await
    }

    pub async fn start_with(options: Options) -> World {
        fapi_enforcement::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let pki = DevPki::at(&dir.path().join("certs"));
        match &options.pki {
            Some(from) => {
                std::fs::create_dir_all(&pki.dir).unwrap();
                for entry in std::fs::read_dir(from).unwrap() {
                    let entry = entry.unwrap();
                    std::fs::copy(entry.path(), pki.dir.join(entry.file_name())).unwrap();
                }
            }
            None => pki.generate().unwrap(),
        }
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let (gateway_addr, admin_addr) = (free_port(), free_port());
        let fixture_options = FixtureOptions {
            introspection_client_id: "fapi-gateway".into(),
            introspection_client_secret: "test-secret".into(),
            token_lifetime: Duration::from_secs(3600),
            consent_storage_secret: Some(fapi_devkit::demo::CONSENT_STORAGE_SECRET.into()),
            revocation_hook: options.revocation_hook.then(|| RevocationHook {
                url: format!("http://{admin_addr}/revocations"),
                bearer_secret: ADMIN_SECRET.into(),
            }),
        };
        let fixtures = start_fixtures(
            &pki,
            FixtureAddresses {
                authorization_server: any,
                go_bank: any,
                hyperscale_bank: any,
                consent_storage: Some(any),
            },
            fixture_options,
        )
        .await
        .unwrap();
        let mut options = options;
        if let Some(servers) = &mut options.servers_toml {
            *servers = servers.replace("MOCK_AS", &fixtures.authorization_server_addr.to_string());
        }
        if let Some(extra) = &options.signals {
            let addr = fixtures.authorization_server_addr.to_string();
            let section = signals_section(&addr, &extra.replace("MOCK_AS", &addr));
            options.config_extra.push_str(&section);
            fixtures.authorization_server.signals.set_target(fapi_devkit::fixtures::SignalTarget {
                url: format!("http://{admin_addr}/signals/events"),
                issuer: format!("https://{}", fixtures.authorization_server_addr),
                audience: SIGNALS_AUDIENCE.into(),
            });
        }
        let config_path = write_config(dir.path(), &fixtures, gateway_addr, admin_addr, &options);
        let config = GatewayConfig::load(&config_path).unwrap();
        // The banks verify the grant JWTs the policies turn on.
        fapi_devkit::demo::verify_grants(&fixtures, &config);
        let gateway = RunningGateway::start(config).await.unwrap();
        let tpp = client(&pki.ca(), Some((&pki.tpp_cert(), &pki.tpp_key())), false);
        let other_tpp = client(&pki.ca(), Some((&pki.other_tpp_cert(), &pki.other_tpp_key())), false);
        World { dir, pki, fixtures, gateway, gateway_addr, admin_addr, tpp, other_tpp }
    }

    pub fn as_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.fixtures.authorization_server_addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.gateway_addr)
    }

    /// Creates a consent as `client`, has `subject` authorise it for `accounts`.
    pub async fn consent(
        &self,
        client: &reqwest::Client,
        bank: &str,
        permissions: &[&str],
        subject: &str,
        accounts: &[&str],
    ) -> String {
        self.consent_of_kind(client, bank, "account-access-consent", permissions, subject, accounts).await
    }

    /// As [`World::consent`], for a consent of another kind (`domestic-payment-consent`, …).
    pub async fn consent_of_kind(
        &self,
        client: &reqwest::Client,
        bank: &str,
        kind: &str,
        permissions: &[&str],
        subject: &str,
        accounts: &[&str],
    ) -> String {
        let created: Value = client
            .post(self.as_url("/consents"))
            .json(&json!({"bank": bank, "type": kind, "permissions": permissions}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["ConsentId"].as_str().unwrap().to_string();
        client
            .post(self.as_url(&format!("/consents/{id}/authorise")))
            .json(&json!({"subject": subject, "accounts": accounts}))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        id
    }

    /// A certificate-bound access token for `client`.
    pub async fn token(
        &self,
        client: &reqwest::Client,
        consent_id: Option<&str>,
        scope: &str,
        expires_in: Option<u64>,
    ) -> String {
        let mut form = vec![("grant_type", "client_credentials".to_string()), ("scope", scope.to_string())];
        if let Some(c) = consent_id {
            form.push(("consent_id", c.to_string()));
        }
        if let Some(e) = expires_in {
            form.push(("expires_in", e.to_string()));
        }
        let body: Value = client
            .post(self.as_url("/token"))
            .form(&form)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"].as_str().unwrap().to_string()
    }

    /// A Go Bank consent for alice's first account and a token for it, as the TPP.
    pub async fn go_bank_token(&self) -> (String, String) {
        let consent = self.consent(&self.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
        let token = self.token(&self.tpp, Some(&consent), "openid accounts", None).await;
        (consent, token)
    }

    pub async fn get(&self, client: &reqwest::Client, path: &str, token: &str) -> reqwest::Response {
        client.get(self.url(path)).bearer_auth(token).send().await.unwrap()
    }

    pub fn introspections(&self) -> u64 {
        self.fixtures.authorization_server.introspection_calls()
    }

    /// The admin listener's text at `path` (with the admin secret).
    pub async fn admin(&self, path: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .get(format!("http://{}{path}", self.admin_addr))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The value of one metric sample, e.g. `fapi_gateway_cache_lookups_total{result="hit"}`.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, text) = self.admin("/metrics").await;
        metric_value(&text, sample)
    }

    pub fn bank_requests(&self) -> u64 {
        self.fixtures.go_bank.requests() + self.fixtures.hyperscale_bank.requests()
    }
}

/// The response's status, challenge, interaction id and Open Banking error code.
pub async fn refusal(r: reqwest::Response) -> (u16, String, String, String) {
    let status = r.status().as_u16();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (challenge, id) = (header("www-authenticate"), header("x-fapi-interaction-id"));
    let body: Value = r.json().await.unwrap();
    let code = body["Errors"][0]["ErrorCode"].as_str().unwrap_or("").to_string();
    (status, challenge, id, code)
}

/// One sample's value in a Prometheus text exposition (0 when absent).
pub fn metric_value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Sends `request` as is over a TLS connection offering only `suite`; the status line.
pub async fn raw_request(w: &World, suite: rustls::SupportedCipherSuite, request: &[u8]) -> Result<String, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![suite];
    let version = match suite {
        rustls::SupportedCipherSuite::Tls12(_) => &rustls::version::TLS12,
        rustls::SupportedCipherSuite::Tls13(_) => &rustls::version::TLS13,
    };
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap();
    let key = fapi_enforcement::client_identity::read_private_key(&w.pki.tpp_key()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(w.gateway_addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut tls =
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.map_err(|e| e.to_string())?;
    tls.write_all(request).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or("").to_string())
}
