//! The `fapi-gateway run` process itself: JSON logs without tokens, and graceful
//! shutdown on SIGTERM.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fapi_enforcement::cache::TokenKey;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_carry_no_token_and_sigterm_drains() {
    let w = World::start().await; // its fixtures and PKI; its in-process gateway is not used
    let (consent, token) = w.go_bank_token().await;
    // The file names one pair of addresses, the command line another (as in a container):
    // the command line wins, also after a reload.
    let (file_gateway, file_admin) = (free_port(), free_port());
    let (gateway_addr, admin_addr) = (free_port(), free_port());
    let dir = w.dir.path().join("process");
    let config = child_config(
        &w,
        &dir,
        file_gateway,
        file_admin,
        "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 1\n[logging]\nformat = \"json\"\nlevel = \"debug\"\n",
    );

    let (listen, admin_listen) = (gateway_addr.to_string(), admin_addr.to_string());
    let mut child =
        spawn_gateway(&config, &dir.join("stderr.log"), &["--listen", &listen, "--admin-listen", &admin_listen]);
    fapi_gateway_server::server::wait_for_listener(gateway_addr).await.unwrap();
    let (tpp, other) = (&w.tpp, &w.other_tpp);
    let url = |p: &str| format!("https://{gateway_addr}{p}");
    let interaction = "0b4c9f0e-2f7e-4c59-9a53-6d3f1f0f5a11";
    let r = tpp
        .get(url("/gobank/accounts"))
        .bearer_auth(&token)
        .header("x-fapi-interaction-id", interaction)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(tpp.get(url(&format!("/gobank/accounts?access_token={token}"))).send().await.unwrap().status(), 400);
    assert_eq!(other.get(url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap().status(), 401);
    assert_eq!(tpp.get(url("/gobank/accounts")).bearer_auth(format!("{token}x")).send().await.unwrap().status(), 401);

    // SIGHUP reloads (the configuration is unchanged: a new generation all the same).
    let hup = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(hup.success());
    let admin = reqwest::Client::new();
    let mut generation = 0.0;
    for _ in 0..50 {
        let text = admin
            .get(format!("http://{admin_addr}/metrics"))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        generation = metric_value(&text, "fapi_gateway_config_generation");
        if generation == 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(generation, 2.0, "SIGHUP did not reload");
    assert!(!logs_so_far(&dir).contains("take effect on restart"), "the address overrides survive a reload");
    assert_eq!(tpp.get(url("/gobank/balances")).bearer_auth(&token).send().await.unwrap().status(), 200);

    // SIGTERM: drained and gone within the configured grace (1 s + 1 s) and a margin.
    let stopping = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(stopping.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");

    let logs = std::fs::read_to_string(dir.join("stderr.log")).unwrap();
    assert!(!logs.contains(&token), "a token reached the logs");
    assert!(!logs.contains("test-secret"), "the client secret reached the logs");
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "fapi_gateway::access")
        .collect();
    assert_eq!(access.len(), 5, "{logs}");
    let first = &access[0];
    assert_eq!(first["interaction_id"], interaction);
    assert_eq!(first["decision"], "allowed");
    assert_eq!(first["status"], 200);
    assert_eq!(first["client_id"], "financroo");
    assert_eq!(first["consent_id"], consent);
    assert_eq!(first["token"], TokenKey::new("default", &token).short());
    assert_eq!(access[1]["decision"], "invalid_request");
    assert_eq!(access[2]["decision"], "cert_mismatch");
    // A refusal after the token was introspected names its client and consent too.
    assert_eq!(access[2]["client_id"], "financroo");
    assert_eq!(access[2]["consent_id"], consent);
    assert_eq!(access[1]["client_id"], "", "no token was read: nothing to name");
    assert!(logs.contains("SIGHUP: reloading"), "{logs}");
}

/// A configuration for a `fapi-gateway run` child in `dir`, on its own addresses, with the
/// world's fixtures and PKI; `extra` goes at the end (inside `[server]`).
fn child_config(w: &World, dir: &Path, gateway: SocketAddr, admin: SocketAddr, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let options = Options { config_extra: extra.into(), ..Options::default() };
    let config = write_config(dir, &w.fixtures, gateway, admin, &options);
    let text = std::fs::read_to_string(&config).unwrap().replace("\"certs/", "\"../certs/");
    std::fs::write(&config, text).unwrap();
    config
}

fn logs_so_far(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default()
}

/// Starts `fapi-gateway run --config <config> <args>`, its stderr into `log`.
fn spawn_gateway(config: &Path, log: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .args(args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_upgrade_hands_the_listener_to_a_new_process() {
    let w = World::start().await; // its fixtures and PKI; its in-process gateway is not used
    let (_, token) = w.go_bank_token().await;
    let (gateway_addr, admin_addr) = (free_port(), free_port());
    let dir = w.dir.path().join("upgrade");
    let socket = dir.join("upgrade.sock");
    let extra = format!(
        "grace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 1\nupgrade_socket = \"{}\"\n",
        socket.display()
    );
    let config = child_config(&w, &dir, gateway_addr, admin_addr, &extra);

    let mut old = spawn_gateway(&config, &dir.join("old.log"), &[]);
    fapi_gateway_server::server::wait_for_listener(gateway_addr).await.unwrap();
    let url = format!("https://{gateway_addr}/gobank/accounts");
    assert_eq!(w.tpp.get(&url).bearer_auth(&token).send().await.unwrap().status(), 200);

    let mut new = spawn_gateway(&config, &dir.join("new.log"), &["--upgrade"]);
    // The new process waits on the upgrade socket for the old one's listeners.
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(socket.exists(), "the new process never listened on the upgrade socket");
    assert!(Command::new("kill").args(["-QUIT", &old.id().to_string()]).status().unwrap().success());
    let stopping = Instant::now();
    while old.try_wait().unwrap().is_none() {
        assert!(stopping.elapsed() < Duration::from_secs(15), "the old process did not exit");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Only the new process is left, on the same socket.
    let fresh = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
    let r = fresh.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(new.try_wait().unwrap().is_none(), "the new process is serving");
    fapi_gateway_server::server::wait_for_listener(admin_addr).await.unwrap();
    let _ = new.kill();
    let _ = new.wait();
    let new_log = std::fs::read_to_string(dir.join("new.log")).unwrap();
    assert!(!new_log.contains(&token));
}

/// Waits (at most `limit`) for `child` to exit; its status, or `None` (then it is killed).
async fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn listening(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_exits_at_once_when_a_listener_port_is_taken_and_is_ready_once_listening() {
    let w = World::start().await; // its fixtures and PKI; its in-process gateway is not used
    let dir = w.dir.path().join("taken");
    for which in ["listener", "admin"] {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = taken.local_addr().unwrap();
        let free = free_port();
        let (gateway, admin) = if which == "listener" { (busy, free) } else { (free, busy) };
        let config = child_config(&w, &dir, gateway, admin, "");
        let log = dir.join(format!("{which}.log"));
        let started = Instant::now();
        let mut child = spawn_gateway(&config, &log, &[]);
        let status = exit_within(&mut child, Duration::from_secs(5)).await;
        let stderr = std::fs::read_to_string(&log).unwrap();
        let status = status.unwrap_or_else(|| panic!("{which} taken: still running after 5 s\n{stderr}"));
        assert_eq!(status.code(), Some(1), "{which} taken\n{stderr}");
        assert!(started.elapsed() < Duration::from_secs(3), "{which} taken: took {:?}", started.elapsed());
        assert!(stderr.contains(&format!("cannot listen on {busy}: address in use")), "{which} taken\n{stderr}");
        assert!(!listening(free), "{which} taken: the other listener is up");
    }
    // Both free: it serves, and /readyz says so.
    let (gateway, admin) = (free_port(), free_port());
    let config = child_config(&w, &dir, gateway, admin, "");
    let mut child = spawn_gateway(&config, &dir.join("ready.log"), &[]);
    fapi_gateway_server::server::wait_for_listener(admin).await.unwrap();
    let probe = reqwest::Client::new();
    let mut ready = (0, String::new());
    for _ in 0..50 {
        let r = probe.get(format!("http://{admin}/readyz")).send().await.unwrap();
        ready = (r.status().as_u16(), r.text().await.unwrap());
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready, (200, "ready\n".to_string()));
    assert!(listening(gateway));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_exits_at_once_when_the_gateway_port_is_taken() {
    let w = World::start().await; // its fixtures and PKI
    let dir = w.dir.path().join("demo");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap();
    let config = child_config(&w, &dir, busy, free_port(), "");
    let log = dir.join("demo.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["demo", "--config"])
        .arg(&config)
        .current_dir(&dir)
        .env_remove("RUST_LOG")
        .stdout(std::fs::File::create(dir.join("demo.out")).unwrap())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let status = exit_within(&mut child, Duration::from_secs(10)).await;
    let stderr = std::fs::read_to_string(&log).unwrap();
    let stdout = std::fs::read_to_string(dir.join("demo.out")).unwrap();
    let status = status.unwrap_or_else(|| panic!("still running after 10 s\n{stderr}"));
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("cannot listen on {busy}: address in use")), "{stderr}");
    assert!(!stdout.contains("fapi-gateway demo"), "the banner was printed: {stdout}");
}
