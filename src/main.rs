use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fapi_devkit::pki::DevPki;
use fapi_enforcement::config::{GatewayConfig, LogFormat, LoggingConfig};

/// An mTLS gateway that lets through only what a FAPI authorization server and the
/// customer's consent allow.
#[derive(Parser)]
#[command(name = "fapi-gateway", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// Take the listening sockets over from the running instance (graceful upgrade:
        /// start the new binary with --upgrade, then send SIGQUIT to the old one).
        #[arg(long)]
        upgrade: bool,
        /// Listen here instead of the file's `listener.address` (e.g. 0.0.0.0:8443 in a container).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The admin listener here instead of the file's `admin.address`.
        #[arg(long)]
        admin_listen: Option<std::net::SocketAddr>,
    },
    /// Run the demo: dev PKI, mock authorization server, Go Bank and Hyperscale Bank, all on loopback.
    Demo {
        /// Defaults to ./gateway.toml, else the embedded example.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Run a fleet: this many gateways (the others on the next ports, 8444, …) sharing
        /// revocations through a redis-server started from PATH on 127.0.0.1:6390.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Validate a configuration and its policies; print every problem with file and line.
    Check {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
    },
    /// Show how a request would be decided, check by check, for an introspection response.
    Explain {
        #[arg(long, default_value = "gateway.toml")]
        config: PathBuf,
        /// The introspection response (JSON file).
        #[arg(long)]
        claims: PathBuf,
        /// The client certificate (PEM) the request comes with; default: the one the token is bound to.
        #[arg(long)]
        certificate: Option<PathBuf>,
        /// The request body (JSON file), for routes that check it.
        #[arg(long)]
        body: Option<PathBuf>,
        /// The request, e.g. "GET /gobank/accounts/GB-1001/balances".
        request: String,
    },
    /// Run one of the test fixtures on its own (as the docker compose stack does).
    Fixture {
        #[command(subcommand)]
        fixture: Fixture,
    },
    /// The scripted TPP journey across both banks, ending with a revocation.
    Tpp {
        #[arg(long, default_value = "https://127.0.0.1:8443")]
        gateway: String,
        #[arg(long, default_value = "https://127.0.0.1:9443")]
        authorization_server: String,
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        #[arg(long, default_value = "alice")]
        subject: String,
        /// Leave one Go Bank consent authorised; print it and its token.
        #[arg(long)]
        keep: bool,
    },
    /// The load benchmark: bank direct, the gateway without and with authorization (hot and
    /// cold tokens, a revocation storm) and nginx's auth_request pattern, in one run.
    Bench(fapi_devkit::bench::BenchArgs),
    /// Measure a fleet of three gateways on one Redis: revocation propagation, shared cache.
    BenchFleet(fapi_devkit::bench_fleet::FleetBenchArgs),
    /// Write a development PKI (CA, gateway server certificate, two TPP client certificates).
    Certs {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum Fixture {
    /// The mock authorization server (HTTPS).
    AuthorizationServer {
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        #[arg(long, default_value = "fapi-gateway")]
        introspection_client_id: String,
        /// File holding the gateway's client secret (the gateway's `client_secret_file`).
        #[arg(long)]
        introspection_secret_file: PathBuf,
        /// The gateway's admin listener, told of revoked consents.
        #[arg(long)]
        gateway_admin: Option<String>,
        /// File holding the gateway's admin bearer secret (its `bearer_secret_file`).
        #[arg(long)]
        admin_secret_file: Option<PathBuf>,
        #[arg(long)]
        consent_storage_secret: Option<String>,
        /// The gateway's signal receiver (`http://…/signals/events`): revoked consents are
        /// pushed there as signed Security Event Tokens instead of to `--gateway-admin`.
        #[arg(long)]
        signal_receiver: Option<String>,
        /// The SETs' `iss` (the transmitter's `issuer` in gateway.toml).
        #[arg(long, default_value = "https://127.0.0.1:9443")]
        signal_issuer: String,
        /// The SETs' `aud` (the transmitter's `audience` in gateway.toml).
        #[arg(long, default_value = "https://127.0.0.1:9100/signals/events")]
        signal_audience: String,
    },
    /// The benchmark's pingora floor: the embedding example without enforcement, on the
    /// listener (and threads) of a gateway configuration, forwarding everything to one bank.
    BareProxy {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        upstream: std::net::SocketAddr,
    },
    /// A mock bank (HTTP).
    Bank {
        #[arg(long, value_parser = ["gobank", "hyperscalebank"])]
        bank: String,
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// The consent storage page (HTTP).
    ConsentStorage {
        #[arg(long, default_value = "127.0.0.1:8084")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "https://127.0.0.1:9443")]
        authorization_server: String,
        #[arg(long, default_value = "certs")]
        certs: PathBuf,
        #[arg(long)]
        secret: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // First: one crypto provider for pingora, reqwest and the fixtures alike. `run` and
    // `demo` install the one of the configured TLS profile once the configuration is read.
    if !matches!(
        cli.command,
        Command::Run { .. } | Command::Demo { .. } | Command::Fixture { fixture: Fixture::BareProxy { .. } }
    ) {
        fapi_enforcement::install_crypto_provider();
    }
    let result = match cli.command {
        Command::Run { config, upgrade, listen, admin_listen } => GatewayConfig::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                config.with_overrides(fapi_enforcement::config::AddressOverrides { listen, admin_listen })
            })
            .and_then(|config| {
                init_logging(Some(&config.logging));
                fapi_gateway_server::server::run(config, upgrade).map_err(|e| e.to_string())
            })
            .map(|never| match never {}),
        Command::Demo { config, replicas } => {
            init_logging(None);
            fapi_devkit::demo_fleet::run(config.as_deref(), replicas).map(|never| match never {})
        }
        Command::Check { config } => check(&config),
        Command::BenchFleet(args) => {
            init_logging(Some(&fapi_enforcement::config::LoggingConfig {
                format: LogFormat::Pretty,
                level: "warn".into(),
            }));
            let binary = std::env::current_exe().map_err(|e| e.to_string());
            binary.and_then(|binary| runtime()?.block_on(fapi_devkit::bench_fleet::run(args, binary))).map(|report| {
                print!("{}", report.table());
            })
        }
        Command::Bench(args) => {
            init_logging(Some(&fapi_enforcement::config::LoggingConfig {
                format: LogFormat::Pretty,
                level: "warn".into(),
            }));
            bench(args)
        }
        Command::Fixture { fixture: Fixture::BareProxy { config, upstream } } => {
            init_logging(None);
            fapi_devkit::bare_proxy::run(&config, upstream)
        }
        Command::Fixture { fixture } => {
            init_logging(None);
            run_fixture(fixture)
        }
        Command::Tpp { gateway, authorization_server, certs, subject, keep } => {
            let journey = fapi_devkit::tpp::Journey { gateway, authorization_server, subject, keep };
            runtime()
                .and_then(|rt| rt.block_on(fapi_devkit::tpp::run(journey, &certs)))
                .map(|r| print!("{}", r.transcript))
        }
        Command::Explain { config, claims, certificate, body, request } => {
            match explain(&config, &claims, certificate.as_deref(), body.as_deref(), &request) {
                Ok((report, allowed)) => {
                    print!("{report}");
                    return if allowed { ExitCode::SUCCESS } else { ExitCode::from(2) };
                }
                Err(e) => Err(e),
            }
        }
        Command::Certs { out } => {
            DevPki::at(&out).generate().map(|()| println!("wrote a development PKI to {}", out.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn explain(
    config: &Path,
    claims: &Path,
    certificate: Option<&Path>,
    body: Option<&Path>,
    request: &str,
) -> Result<(String, bool), String> {
    let config = GatewayConfig::load(config).map_err(|e| e.to_string())?;
    let json = |p: &Path| -> Result<serde_json::Value, String> {
        let text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", p.display()))
    };
    let certificate_thumbprint = match certificate {
        Some(p) => {
            let der = fapi_enforcement::client_identity::read_certificates(p).map_err(|e| e.to_string())?.remove(0);
            Some(fapi_enforcement::client_identity::thumbprint(&der))
        }
        None => None,
    };
    let question = fapi_enforcement::explain::Question {
        request,
        claims: json(claims)?,
        certificate_thumbprint,
        body: body.map(json).transpose()?,
    };
    fapi_enforcement::explain::explain(&config.policies, question)
}

#[allow(clippy::too_many_arguments)]
fn bench(args: fapi_devkit::bench::BenchArgs) -> Result<(), String> {
    let json = args.json.clone();
    let options = args.options(std::env::current_exe().map_err(|e| e.to_string())?)?;
    let report = runtime()?.block_on(fapi_devkit::bench::run(options))?;
    print!("{}", report.table());
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json()).unwrap_or_default())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| e.to_string())
}

/// Runs a fixture until SIGTERM or SIGINT.
fn run_fixture(fixture: Fixture) -> Result<(), String> {
    use fapi_devkit::fixtures::{
        AuthorizationServer, AuthorizationServerSettings, Bank, BankData, ConsentShape, ConsentStorage,
        RegisteredClient, RevocationHook,
    };
    runtime()?.block_on(async move {
        let running = match fixture {
            Fixture::AuthorizationServer {
                listen,
                certs,
                introspection_client_id,
                introspection_secret_file,
                gateway_admin,
                admin_secret_file,
                consent_storage_secret,
                signal_receiver,
                signal_issuer,
                signal_audience,
            } => {
                let pki = DevPki::at(&certs);
                let read = |p: &std::path::Path| {
                    std::fs::read_to_string(p)
                        .map(|s| s.trim_end().to_string())
                        .map_err(|e| format!("cannot read {}: {e}", p.display()))
                };
                let introspection_secret = read(&introspection_secret_file)?;
                let admin_secret = admin_secret_file.as_deref().map(read).transpose()?;
                let revocation_hook = match (gateway_admin, admin_secret) {
                    (Some(url), Some(secret)) => Some(RevocationHook {
                        url: format!("{}/revocations", url.trim_end_matches('/')),
                        bearer_secret: secret,
                    }),
                    (None, None) => None,
                    _ => return Err("--gateway-admin and --admin-secret go together".to_string()),
                };
                let settings = AuthorizationServerSettings {
                    clients: vec![
                        RegisteredClient::from_certificate_file("financroo", &pki.tpp_cert())?,
                        RegisteredClient::from_certificate_file("other-tpp", &pki.other_tpp_cert())?,
                    ],
                    introspection_client_id,
                    introspection_client_secret: introspection_secret,
                    token_lifetime: std::time::Duration::from_secs(3600),
                    banks: std::collections::HashMap::from([
                        ("gobank".to_string(), ConsentShape::Obuk),
                        ("hyperscalebank".to_string(), ConsentShape::Generic),
                    ]),
                    revocation_hook,
                    consent_storage_secret,
                };
                let server = AuthorizationServer::new(settings);
                if let Some(url) = signal_receiver {
                    server.signals.set_target(fapi_devkit::fixtures::SignalTarget {
                        url,
                        issuer: signal_issuer,
                        audience: signal_audience,
                    });
                }
                server.serve(listen, &pki.server_cert(), &pki.server_key(), &pki.ca()).await?
            }
            Fixture::BareProxy { .. } => return Err("the bare proxy runs outside a runtime".into()),
            Fixture::Bank { bank, listen } => {
                let data = if bank == "gobank" { BankData::go_bank() } else { BankData::hyperscale_bank() };
                Bank::new(data).serve(listen).await?
            }
            Fixture::ConsentStorage { listen, authorization_server, certs, secret } => {
                ConsentStorage::new(&authorization_server, &DevPki::at(&certs).ca(), &secret)?.serve(listen).await?
            }
        };
        println!("listening on {}", running.addr);
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(())
    })
}

fn check(path: &std::path::Path) -> Result<(), String> {
    let config = GatewayConfig::load(path).map_err(|e| {
        let n = e.0.len();
        format!("{e}\n{n} problem{} found", if n == 1 { "" } else { "s" })
    })?;
    for w in &config.warnings {
        println!("warning: {w}");
    }
    let routes: usize = config.policies.apis().iter().map(|a| a.routes.len()).sum();
    let servers: Vec<String> = config
        .authorization_servers
        .iter()
        .map(|s| {
            let at = s.introspection_endpoint.clone().or_else(|| s.issuer.clone().map(|i| format!("{i} (discovery)")));
            format!("{} at {}", s.name, at.unwrap_or_default())
        })
        .collect();
    println!(
        "{}: ok ({} APIs, {} routes, listener {}, authorization servers: {})",
        path.display(),
        config.policies.apis().len(),
        routes,
        config.listener.address,
        servers.join("; ")
    );
    // What each API reads from its authorization server's responses, and what it does not.
    for api in config.policies.apis() {
        println!(
            "  API `{}` ({}, {} routes): {}",
            api.name,
            if api.prefix.is_empty() { "/" } else { &api.prefix },
            api.routes.len(),
            api.claims.describe()
        );
    }
    Ok(())
}

/// Logs to standard error; `RUST_LOG` overrides the configured level. pingora's
/// per-connection errors are counted, and shown only at debug (see `log_noise`).
fn init_logging(config: Option<&LoggingConfig>) {
    use std::io::IsTerminal;
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{fmt, EnvFilter};
    let level = config.map(|c| c.level.as_str()).unwrap_or("info");
    let directives = std::env::var("RUST_LOG").ok().filter(|v| EnvFilter::try_new(v).is_ok());
    let directives = directives.unwrap_or_else(|| level.to_string());
    let filter = EnvFilter::new(&directives);
    let noise = fapi_gateway_server::connections::log_noise::ConnectionNoise {
        show: directives.contains("debug") || directives.contains("trace"),
    };
    let layer = match config.map(|c| c.format) {
        Some(LogFormat::Json) => {
            fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).with_target(true).boxed()
        }
        // Colour only for a person at a terminal, never into files or a log collector.
        _ => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
    };
    tracing_subscriber::registry().with(filter).with(layer.with_filter(noise)).init();
}
