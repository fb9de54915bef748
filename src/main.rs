use std::path::PathBuf;
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
