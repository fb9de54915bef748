use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use fapi_gateway::config::GatewayConfig;
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
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => GatewayConfig::load(&config)
            .map_err(|e| e.to_string())
            .and_then(fapi_gateway::server::run)
            .map(|never| match never {}),
        Command::Demo { config } => {
            fapi_gateway::demo::run(config.as_deref()).map(|never| match never {})
        }
        Command::Check { config } => check(&config),
        Command::Certs { out } => DevPki::at(&out)
            .generate()
            .map(|()| println!("wrote a development PKI to {}", out.display())),
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
    println!(
        "{}: ok ({} APIs, {} routes, listener {}, introspection at {})",
        path.display(),
        config.policies.apis().len(),
        routes,
        config.listener.address,
        config.authorization_server.introspection_endpoint
    );
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
}
