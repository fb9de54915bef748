use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fapi_gateway::config::{GatewayConfig, LogFormat, LoggingConfig};
use fapi_gateway::pki::DevPki;

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
    },
    /// Run the demo: dev PKI, mock authorization server, Go Bank and Hyperscale Bank, all on loopback.
    Demo {
        /// Defaults to ./gateway.toml, else the embedded example.
        #[arg(long)]
        config: Option<PathBuf>,
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
    /// Write a development PKI (CA, gateway server certificate, two TPP client certificates).
    Certs {
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    // First: one crypto provider for pingora, reqwest and the fixtures alike.
    fapi_gateway::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, upgrade } => GatewayConfig::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                init_logging(Some(&config.logging));
                fapi_gateway::server::run(config, upgrade)
            })
            .map(|never| match never {}),
        Command::Demo { config } => {
            init_logging(None);
            fapi_gateway::demo::run(config.as_deref()).map(|never| match never {})
        }
        Command::Check { config } => check(&config),
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
            let der = fapi_gateway::client_identity::read_certificates(p)?.remove(0);
            Some(fapi_gateway::client_identity::thumbprint(&der))
        }
        None => None,
    };
    let question = fapi_gateway::explain::Question {
        request,
        claims: json(claims)?,
        certificate_thumbprint,
        body: body.map(json).transpose()?,
    };
    fapi_gateway::explain::explain(&config.policies, question)
}

fn check(path: &std::path::Path) -> Result<(), String> {
    let config = GatewayConfig::load(path).map_err(|e| {
        let n = e.0.len();
        format!("{e}\n{n} problem{} found", if n == 1 { "" } else { "s" })
    })?;
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
    Ok(())
}

/// Logs to standard error; `RUST_LOG` overrides the configured level.
fn init_logging(config: Option<&LoggingConfig>) {
    use tracing_subscriber::EnvFilter;
    let level = config.map(|c| c.level.as_str()).unwrap_or("info");
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(true);
    match config.map(|c| c.format) {
        Some(LogFormat::Json) => builder.json().flatten_event(true).init(),
        _ => builder.init(),
    }
}
