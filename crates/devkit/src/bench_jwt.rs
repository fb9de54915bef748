//! The benchmark's `jwt` scenario: the cost of the grant JWT on the hot path. A second
//! gateway, the same as the hot one but with Go Bank's `forward_jwt` on, is driven right
//! after the plain one in every round with the same warm tokens; the report compares the
//! pair of each round (req/s and CPU per request of each gateway process).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::bench::{drive, gateway_config, pick_port, spawn, Measured, Process, Target};
use crate::demo::Fixtures;

/// The names of the two sides in the report: grant JWT off (the hot gateway), on.
pub const SIDES: [&str; 2] = ["gateway-hot-jwt-off", "gateway-hot-jwt-on"];

/// Starts the gateway with the grant JWT on (its own process, in `dir/jwt-gateway`).
pub(crate) async fn start(
    dir: &Path,
    binary: &Path,
    fixtures: &Fixtures,
    bank: SocketAddr,
    log: &Path,
) -> Result<(Process, SocketAddr), String> {
    let (path, addr) = gateway_config(&dir.join("jwt-gateway"), fixtures, bank, false, pick_port(), true)?;
    fapi_enforcement::config::GatewayConfig::load(&path).map_err(|e| e.to_string())?;
    let process = spawn(binary, &["run", "--config", &path.display().to_string()], log)?;
    fapi_gateway_server::server::wait_for_listener(addr).await?;
    Ok((process, addr))
}

/// One round: the hot gateway (`off`), then the grant-JWT gateway (`on`), each driven for
/// `duration` with the same tokens; each side's figures with the CPU its process spent.
pub(crate) async fn round(
    clients: &[reqwest::Client],
    sides: [(SocketAddr, u32); 2],
    tokens: Arc<Vec<(String, String)>>,
    duration: Duration,
    max: u64,
    round: usize,
) -> [Measured; 2] {
    let mut out: [Measured; 2] = Default::default();
    for (side, (addr, pid)) in sides.into_iter().enumerate() {
        let url = format!("https://{addr}/gobank/accounts");
        let tokens = tokens.clone();
        let target: Target = Arc::new(move |c: &reqwest::Client, i| {
            Some(c.get(&url).bearer_auth(&tokens[(i as usize) % tokens.len()].1))
        });
        let sample = crate::bench_proc::Sample::start(Some(pid));
        let mut m = drive(clients, duration, max, target).await;
        let cost = sample.finish();
        m.scenario = SIDES[side];
        m.generator = "reqwest";
        m.round = round;
        (m.cpu, m.steal, m.load) = (cost.cpu, cost.steal, cost.load);
        out[side] = m;
    }
    out
}
