//! A fleet harness for tests/fleet_limits.rs: a real `redis-server` on loopback and
//! gateway replicas as `fapi-gateway run` processes, each with the same policy additions.
//! (The harness of tests/fleet.rs, with policy appends for every replica; included with
//! `#[path]` next to `mod common;`, so test files without a fleet do not compile it.
//! tests/fleet.rs keeps its own copy for now, which main extends: to be merged into this
//! one.)

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::*;

/// A `redis-server` on a free loopback port, without persistence; killed when dropped.
pub struct Redis {
    pub port: u16,
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Redis {
    pub async fn start() -> Redis {
        let mut redis = Redis { port: free_port().port(), child: None, dir: tempfile::tempdir().unwrap() };
        redis.spawn().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            // Small stream nodes, so `MAXLEN ~` trims at a few entries (the gap test).
            .args(["--stream-node-max-entries", "2"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server did not answer PING within 10 s");
    }

    pub async fn ping(&self) -> bool {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else { return false };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        matches!(tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf)).await, Ok(Ok(_)))
            && &buf == b"+PONG\r\n"
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One `fapi-gateway run` process of the fleet; killed when dropped.
pub struct Replica {
    pub child: Child,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `[cluster]` section for `redis`, with `extra` lines.
pub fn cluster_section(redis: &Redis, extra: &str) -> String {
    format!("[cluster]\nredis_url = \"{}\"\n{extra}\n", redis.url())
}

/// A fleet: the world's in-process gateway (replica 0, the one the authorization server
/// notifies of revocations) and `processes` more as `fapi-gateway run` processes.
pub struct Fleet {
    pub w: World,
    pub options_extra: String,
    /// Text appended to every replica's policy files.
    pub policy_appends: Vec<(String, String)>,
    pub replicas: Vec<Replica>,
}

impl Fleet {
    pub async fn start(redis: &Redis, max_ttl_seconds: f64, cluster_extra: &str, processes: usize) -> Fleet {
        Self::start_with(redis, max_ttl_seconds, cluster_extra, processes, true).await
    }

    /// As `start`; `revocation_hook`: whether the authorization server tells replica 0.
    pub async fn start_with(
        redis: &Redis,
        max_ttl_seconds: f64,
        cluster_extra: &str,
        processes: usize,
        revocation_hook: bool,
    ) -> Fleet {
        Self::start_with_policy(redis, max_ttl_seconds, cluster_extra, processes, revocation_hook, Vec::new()).await
    }

    /// As `start_with`, with `policy_appends` appended to every replica's policy files.
    pub async fn start_with_policy(
        redis: &Redis,
        max_ttl_seconds: f64,
        cluster_extra: &str,
        processes: usize,
        revocation_hook: bool,
        policy_appends: Vec<(String, String)>,
    ) -> Fleet {
        let extra = cluster_section(redis, cluster_extra);
        let options = Options {
            max_ttl_seconds,
            config_extra: extra.clone(),
            revocation_hook,
            policy_appends: policy_appends.clone(),
            ..Options::default()
        };
        let w = World::start_with(options).await;
        let mut fleet = Fleet { w, options_extra: extra, policy_appends, replicas: Vec::new() };
        for _ in 0..processes {
            fleet.add_replica().await;
        }
        fleet
    }

    pub async fn add_replica(&mut self) {
        let n = self.replicas.len() + 1;
        let (gateway, admin) = (free_port(), free_port());
        let dir = self.w.dir.path().join(format!("replica-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let options = Options {
            max_ttl_seconds: 30.0,
            config_extra: self.options_extra.clone(),
            policy_appends: self.policy_appends.clone(),
            ..Options::default()
        };
        let config = write_config(&dir, &self.w.fixtures, gateway, admin, &options);
        let text = std::fs::read_to_string(&config).unwrap().replace("\"certs/", "\"../certs/");
        std::fs::write(&config, text).unwrap();
        let log = dir.join("stderr.log");
        let child = spawn_gateway(&config, &log);
        let replica = Replica { child, gateway, admin, log };
        if let Err(e) = fapi_gateway_server::server::wait_for_listener(gateway).await {
            panic!("replica {n}: {e}\n{}", std::fs::read_to_string(&replica.log).unwrap_or_default());
        }
        self.replicas.push(replica);
    }

    pub fn gateway(&self, i: usize) -> SocketAddr {
        if i == 0 {
            self.w.gateway_addr
        } else {
            self.replicas[i - 1].gateway
        }
    }

    pub fn admin(&self, i: usize) -> SocketAddr {
        if i == 0 {
            self.w.admin_addr
        } else {
            self.replicas[i - 1].admin
        }
    }

    pub fn count(&self) -> usize {
        1 + self.replicas.len()
    }

    pub async fn status(&self, i: usize, token: &str) -> u16 {
        let url = format!("https://{}/gobank/accounts", self.gateway(i));
        self.w.tpp.get(url).bearer_auth(token).send().await.unwrap().status().as_u16()
    }

    pub async fn revoke(&self, i: usize, body: serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/revocations", self.admin(i)))
            .bearer_auth(ADMIN_SECRET)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    pub async fn metric(&self, i: usize, sample: &str) -> f64 {
        let text = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin(i)))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_value(&text, sample)
    }

    /// Waits (up to `limit`) until `sample` at replica `i` is at least `value`.
    pub async fn wait_metric(&self, i: usize, sample: &str, value: f64, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let v = self.metric(i, sample).await;
            if v >= value || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `limit`) until replica `i` answers `token` with `status`; how long it took.
    pub async fn wait_status(&self, i: usize, token: &str, status: u16, limit: Duration) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if self.status(i, token).await == status {
                return Some(started.elapsed());
            }
            if started.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn logs(&self, i: usize) -> String {
        std::fs::read_to_string(&self.replicas[i - 1].log).unwrap_or_default()
    }
}

pub fn spawn_gateway(config: &Path, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}
