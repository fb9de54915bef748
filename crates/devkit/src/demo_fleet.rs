//! `fapi-gateway demo --replicas N`: the demo as a fleet. A `redis-server` from PATH on
//! 127.0.0.1:6390 (no persistence), the demo's gateway on its configured address and
//! N-1 more `fapi-gateway run` processes on the next ports (8444, …; admin 9101, …), all
//! with `[cluster]` pointing at that Redis. The mock authorization server reports
//! revocations to the first replica only: the feed carries them to the others.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fapi_enforcement::config::GatewayConfig;

/// Where the demo's Redis listens.
pub const REDIS: &str = "127.0.0.1:6390";

/// Runs the demo with `replicas` gateways (1: the plain demo) until interrupted.
pub fn run(config: Option<&Path>, replicas: usize) -> Result<std::convert::Infallible, String> {
    if replicas <= 1 {
        return crate::demo::run(config);
    }
    if replicas > 8 {
        return Err("--replicas: at most 8 on one machine".into());
    }
    let config_path = crate::demo::demo_config_path(config)?;
    let base = config_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pki = crate::pki::DevPki::at(&base.join("certs"));
    if !pki.is_complete() {
        pki.generate()?;
        println!("wrote a development PKI to {}", pki.dir.display());
    }
    let redis_server = on_path("redis-server").ok_or(
        "--replicas needs redis-server on PATH (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)",
    )?;
    let fleet_config = fleet_config(&config_path)?;
    let config = GatewayConfig::load(&fleet_config).map_err(|e| e.to_string())?;
    let first = config.listener.address;
    let admin = config.admin.as_ref().map(|a| a.address);
    let mut children = vec![start_redis(&redis_server)?];
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut lines = vec![format!("  redis                   redis://{REDIS} (revocation feed)")];
    for i in 1..replicas {
        let listen = shifted(first, i)?;
        let mut command = Command::new(&exe);
        command.args(["run", "--config"]).arg(&fleet_config).args(["--listen", &listen.to_string()]);
        let admin_listen = admin.map(|a| shifted(a, i)).transpose()?;
        if let Some(a) = admin_listen {
            command.args(["--admin-listen", &a.to_string()]);
        }
        children.push(spawn_bound(command.stdout(Stdio::null()))?);
        lines.push(format!(
            "  replica {}               https://{listen}{}",
            i + 1,
            admin_listen.map(|a| format!("  admin http://{a}/healthz")).unwrap_or_default()
        ));
    }
    println!(
        "fapi-gateway demo: a fleet of {replicas} gateways sharing revocations through Redis\n{}",
        lines.join("\n")
    );
    // The children end with this process (PR_SET_PDEATHSIG): nothing is left behind.
    let result = crate::demo::run(Some(&fleet_config));
    drop(children);
    result
}

/// `address` with its port moved up by `by`.
fn shifted(address: SocketAddr, by: usize) -> Result<SocketAddr, String> {
    let port = address.port() as usize + by;
    let port = u16::try_from(port).map_err(|_| format!("no port {port} after {address}"))?;
    Ok(SocketAddr::new(address.ip(), port))
}

/// The demo's configuration with a `[cluster]` section for the demo's Redis (unless it has
/// one), beside it so its relative paths still hold.
fn fleet_config(config: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("cannot read {}: {e}", config.display()))?;
    if text.lines().any(|l| l.trim() == "[cluster]") {
        return Ok(config.to_path_buf());
    }
    let path = config.with_file_name("gateway-fleet.toml");
    let fleet =
        format!("{text}\n# Written by `fapi-gateway demo --replicas`.\n[cluster]\nredis_url = \"redis://{REDIS}\"\n");
    std::fs::write(&path, fleet).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

/// A child process that ends when this one does; killed when dropped.
struct Bound(Child);

impl Drop for Bound {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_bound(command: &mut Command) -> Result<Bound, String> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn().map(Bound).map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))
}

fn start_redis(program: &Path) -> Result<Bound, String> {
    let port = REDIS.rsplit(':').next().expect("host:port");
    let mut command = Command::new(program);
    command
        .args(["--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn_bound(&mut command)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let address: SocketAddr = REDIS.parse().expect("valid");
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            return Err(format!("redis-server exited ({status}): is {REDIS} taken?"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("redis-server did not listen on {REDIS} within 5 s"))
}
