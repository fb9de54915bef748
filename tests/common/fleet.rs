//! The fleet harness of tests/fleet.rs and tests/fleet_limits.rs: a real `redis-server` on
//! loopback and gateway replicas as `fapi-gateway run` processes beside the test's in-process
//! gateway, all with the same `[cluster]` (and policy additions, `[signals]` when asked).
//! Included with `#[path]` next to `mod common;`, so test files without a fleet do not
//! compile it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

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

    /// As `start`, every replica with a `[signals]` receiver trusting the mock authorization
    /// server (the transmitter's keys loaded at each before this returns); the server tells
    /// nobody of revocations by itself (the tests push its signed SETs).
    pub async fn start_with_signals(redis: &Redis, processes: usize) -> Fleet {
        let extra = cluster_section(redis, "");
        let options = Options {
            config_extra: extra.clone(),
            revocation_hook: false,
            signals: Some(String::new()),
            ..Options::default()
        };
        let w = World::start_with(options).await;
        let signals = signals_section(&w.fixtures.authorization_server_addr.to_string(), "");
        let mut fleet =
            Fleet { w, options_extra: format!("{extra}{signals}"), policy_appends: Vec::new(), replicas: Vec::new() };
        for _ in 0..processes {
            fleet.add_replica().await;
        }
        for i in 0..fleet.count() {
            fleet.signal_keys_loaded(i).await;
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

    /// Pushes `jwt` to replica `i`'s SET receiver (RFC 8935): the status and the JSON body.
    pub async fn push_set(&self, i: usize, jwt: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/signals/events", self.admin(i)))
            .header("content-type", "application/secevent+jwt")
            .timeout(Duration::from_secs(10))
            .body(jwt.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default())
    }

    /// Replica `i` fetches the transmitter's keys in the background at start (503 until
    /// then): waits for them, bounded, with a SET no key verifies.
    pub async fn signal_keys_loaded(&self, i: usize) {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some("probe".into());
        let key = jsonwebtoken::EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let probe = jsonwebtoken::encode(&header, &json!({"iss": self.issuer(), "jti": "probe"}), &key).unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.push_set(i, &probe).await.0 == 503 {
            assert!(Instant::now() < deadline, "replica {i} did not load the transmitter's keys within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The mock authorization server's issuer identifier (the SETs' `iss`).
    pub fn issuer(&self) -> String {
        format!("https://{}", self.w.fixtures.authorization_server_addr)
    }

    /// `claims` signed by the mock authorization server's own key.
    pub fn signed(&self, claims: &serde_json::Value) -> String {
        self.w.fixtures.authorization_server.signals.sign(claims)
    }

    /// Replica `i`'s answer to `token`: its status and Open Banking error code.
    pub async fn refusal(&self, i: usize, token: &str) -> (u16, String) {
        let url = format!("https://{}/gobank/accounts", self.gateway(i));
        let (status, _, _, code) = refusal(self.w.tpp.get(url).bearer_auth(token).send().await.unwrap()).await;
        (status, code)
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
