//! The demo: the dev PKI, the mock authorization server and both mock banks on their
//! fixed loopback ports, and the gateway in front, from `gateway.toml` and `policies/`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::fixtures::{
    AuthorizationServer, AuthorizationServerSettings, Bank, BankData, ConsentShape, GrantChecker, GrantExpectation,
    RegisteredClient, RevocationHook, Running,
};
use crate::pki::DevPki;
use fapi_enforcement::config::{ClientAuth, GatewayConfig};

pub const AUTHORIZATION_SERVER: &str = "127.0.0.1:9443";
pub const GO_BANK: &str = "127.0.0.1:8070";
pub const HYPERSCALE_BANK: &str = "127.0.0.1:7070";
pub const CONSENT_STORAGE: &str = "127.0.0.1:8084";
/// The consent storage's secret at the mock authorization server (a development value).
pub const CONSENT_STORAGE_SECRET: &str = "dev-consent-storage-secret";

/// The configuration compiled into the binary, for running the demo anywhere.
pub const EMBEDDED_CONFIG: &str = include_str!("../../../gateway.toml");
pub const EMBEDDED_POLICIES: [(&str, &str); 2] = [
    ("gobank.toml", include_str!("../../../policies/gobank.toml")),
    ("hyperscalebank.toml", include_str!("../../../policies/hyperscalebank.toml")),
];

/// The fixtures of one demo (or test) world.
pub struct Fixtures {
    pub authorization_server: Arc<AuthorizationServer>,
    pub go_bank: Arc<Bank>,
    pub hyperscale_bank: Arc<Bank>,
    pub authorization_server_addr: SocketAddr,
    pub go_bank_addr: SocketAddr,
    pub hyperscale_bank_addr: SocketAddr,
    pub consent_storage_addr: Option<SocketAddr>,
    running: Vec<Running>,
}

impl Fixtures {
    /// Stops the authorization server's listener (new connections are refused).
    pub fn stop_authorization_server(&self) {
        self.running[0].stop();
    }
}

/// Where each fixture listens (port 0: any free port).
pub struct FixtureAddresses {
    pub authorization_server: SocketAddr,
    pub go_bank: SocketAddr,
    pub hyperscale_bank: SocketAddr,
    /// The consent storage page, if wanted.
    pub consent_storage: Option<SocketAddr>,
}

/// How the fixtures are wired to the gateway.
pub struct FixtureOptions {
    pub introspection_client_id: String,
    pub introspection_client_secret: String,
    pub token_lifetime: Duration,
    /// Where the authorization server reports revoked consents.
    pub revocation_hook: Option<RevocationHook>,
    pub consent_storage_secret: Option<String>,
}

/// Starts the mock authorization server (its TLS certificate and client CA from `pki`)
/// and both banks on the current runtime.
pub async fn start_fixtures(
    pki: &DevPki,
    addresses: FixtureAddresses,
    options: FixtureOptions,
) -> Result<Fixtures, String> {
    let settings = AuthorizationServerSettings {
        clients: vec![
            RegisteredClient::from_certificate_file("financroo", &pki.tpp_cert())?,
            RegisteredClient::from_certificate_file("other-tpp", &pki.other_tpp_cert())?,
        ],
        introspection_client_id: options.introspection_client_id,
        introspection_client_secret: options.introspection_client_secret,
        token_lifetime: options.token_lifetime,
        revocation_hook: options.revocation_hook,
        consent_storage_secret: options.consent_storage_secret.clone(),
        banks: HashMap::from([
            ("gobank".to_string(), ConsentShape::Obuk),
            ("hyperscalebank".to_string(), ConsentShape::Generic),
        ]),
    };
    let authorization_server = AuthorizationServer::new(settings);
    let as_running = authorization_server
        .serve(addresses.authorization_server, &pki.server_cert(), &pki.server_key(), &pki.ca())
        .await?;
    let go_bank = Bank::new(BankData::go_bank());
    let gb_running = go_bank.serve(addresses.go_bank).await?;
    let hyperscale_bank = Bank::new(BankData::hyperscale_bank());
    let hs_running = hyperscale_bank.serve(addresses.hyperscale_bank).await?;
    let mut running = vec![as_running, gb_running, hs_running];
    let mut consent_storage_addr = None;
    if let Some(addr) = addresses.consent_storage {
        let secret = options.consent_storage_secret.clone().unwrap_or_default();
        let url = format!("https://{}", running[0].addr);
        let storage = crate::fixtures::ConsentStorage::new(&url, &pki.ca(), &secret)?;
        let r = storage.serve(addr).await?;
        consent_storage_addr = Some(r.addr);
        running.push(r);
    }
    Ok(Fixtures {
        authorization_server,
        go_bank,
        hyperscale_bank,
        authorization_server_addr: running[0].addr,
        go_bank_addr: running[1].addr,
        hyperscale_bank_addr: running[2].addr,
        consent_storage_addr,
        running,
    })
}

/// Has each mock bank verify the grant JWTs of the APIs that forward one (by the API's
/// upstream name: `gobank`, `hyperscalebank`), against the JWKS of the admin listener.
/// Returns the verifiers turned on, by API name.
pub fn verify_grants(fixtures: &Fixtures, config: &GatewayConfig) -> Vec<(String, Arc<GrantChecker>)> {
    let (Some(admin), Some(signer)) = (&config.admin, &config.grant_jwt) else { return Vec::new() };
    let mut on = Vec::new();
    for api in config.policies.apis() {
        let Some(forward) = &api.forward_jwt else { continue };
        let bank = match api.upstream.name.as_str() {
            "gobank" => &fixtures.go_bank,
            "hyperscalebank" => &fixtures.hyperscale_bank,
            _ => continue,
        };
        let checker = bank.verify_grants(GrantExpectation {
            jwks_url: format!("http://{}{}", admin.address, fapi_enforcement::grant_jwt::JWKS_PATH),
            issuer: signer.issuer.clone(),
            audience: forward.audience.clone(),
            header: forward.header.to_string(),
        });
        on.push((api.name.clone(), checker));
    }
    on
}

/// The config file the demo uses: the given one, `./gateway.toml`, or the embedded
/// default written to `./.fapi-gateway-demo/`.
pub fn demo_config_path(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_path_buf());
    }
    let local = PathBuf::from("gateway.toml");
    if local.is_file() {
        return Ok(local);
    }
    let dir = PathBuf::from(".fapi-gateway-demo");
    std::fs::create_dir_all(dir.join("policies")).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let write = |p: PathBuf, s: &str| std::fs::write(&p, s).map_err(|e| format!("cannot write {}: {e}", p.display()));
    write(dir.join("gateway.toml"), EMBEDDED_CONFIG)?;
    for (name, text) in EMBEDDED_POLICIES {
        write(dir.join("policies").join(name), text)?;
    }
    Ok(dir.join("gateway.toml"))
}

/// Runs the demo until interrupted.
pub fn run(config: Option<&Path>) -> Result<std::convert::Infallible, String> {
    let config_path = demo_config_path(config)?;
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pki = DevPki::at(&base.join("certs"));
    if !pki.is_complete() {
        pki.generate()?;
        println!("wrote a development PKI to {}", pki.dir.display());
    }
    let config = GatewayConfig::load(&config_path).map_err(|e| e.to_string())?;
    fapi_enforcement::client_identity::install_crypto_provider(config.listener.tls_profile)
        .map_err(|e| e.to_string())?;
    let server = config.authorization_servers.first().ok_or("no authorization server configured")?;
    let options = FixtureOptions {
        consent_storage_secret: Some(CONSENT_STORAGE_SECRET.into()),
        introspection_client_id: server.client_id.clone(),
        introspection_client_secret: match &server.client_auth {
            ClientAuth::SecretBasic { secret } | ClientAuth::SecretPost { secret } => secret.clone(),
            other => {
                return Err(format!("the demo's authorization server takes client secrets, not {}", other.method()))
            }
        },
        token_lifetime: Duration::from_secs(3600),
        revocation_hook: config.admin.as_ref().and_then(|a| {
            Some(RevocationHook {
                url: format!("http://{}/revocations", a.address),
                bearer_secret: a.bearer_secret.clone()?,
            })
        }),
    };
    let upstream = |name: &str, default: &str| {
        config.upstreams.get(name).map(|u| u.address).unwrap_or_else(|| default.parse().expect("valid"))
    };
    // With [signals], the authorization server pushes signed SETs to the receiver instead
    // of calling the JSON endpoint.
    let signal_target = signal_target(&config);
    let addresses = FixtureAddresses {
        authorization_server: AUTHORIZATION_SERVER.parse().expect("valid"),
        go_bank: upstream("gobank", GO_BANK),
        hyperscale_bank: upstream("hyperscalebank", HYPERSCALE_BANK),
        consent_storage: Some(CONSENT_STORAGE.parse().expect("valid")),
    };
    let banner = format!(
        "fapi-gateway demo\n  gateway (mTLS)          https://{}\n  authorization server    https://{AUTHORIZATION_SERVER}\n  consent storage         http://{CONSENT_STORAGE}/\n  Go Bank                 http://{}\n  Hyperscale Bank         http://{}\n  admin                   {}\n  TPP certificate         {}, {}\nSee README.md for the walk-through. Ctrl-C stops.",
        config.listener.address,
        addresses_of(&config, "gobank"),
        addresses_of(&config, "hyperscalebank"),
        config.admin.as_ref().map(|a| format!("http://{}/healthz", a.address)).unwrap_or_else(|| "off".into()),
        pki.tpp_cert().display(),
        pki.tpp_key().display(),
    );
    // The banks verify the grant JWTs the policies turn on (checked against a config
    // whose upstream addresses are the fixtures' own).
    let grant_config = GatewayConfig::load(&config_path).map_err(|e| e.to_string())?;
    // The gateway's listeners first: a taken port ends the demo before anything starts.
    let gateway = fapi_gateway_server::server::prepare(config, false).map_err(|e| e.to_string())?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let fixture_pki = pki.clone();
    std::thread::Builder::new()
        .name("demo-fixtures".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build();
            let runtime = match runtime {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            runtime.block_on(async move {
                let started = start_fixtures(&fixture_pki, addresses, options).await;
                match started {
                    Ok(fixtures) => {
                        if let Some(target) = signal_target {
                            fixtures.authorization_server.signals.set_target(target);
                        }
                        for (api, _) in verify_grants(&fixtures, &grant_config) {
                            println!("  {api:<23} verifies the gateway's grant JWT (x-fapi-grant) against its JWKS");
                        }
                        let _ = ready_tx.send(Ok(()));
                        std::future::pending::<()>().await;
                        drop(fixtures);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    ready_rx.recv().map_err(|e| e.to_string())??;
    println!("{banner}");
    gateway.run()
}

/// Where the mock authorization server pushes its SETs: the first transmitter of
/// `[signals]`, at the admin listener.
pub fn signal_target(config: &GatewayConfig) -> Option<crate::fixtures::SignalTarget> {
    let (signals, admin) = (config.signals.as_ref()?, config.admin.as_ref()?);
    let transmitter = signals.transmitters.first()?;
    Some(crate::fixtures::SignalTarget {
        url: format!("http://{}{}", admin.address, signals.path),
        issuer: transmitter.issuer.clone(),
        audience: transmitter.audience.clone(),
    })
}

fn addresses_of(config: &GatewayConfig, name: &str) -> String {
    config.upstreams.get(name).map(|u| u.address.to_string()).unwrap_or_default()
}
