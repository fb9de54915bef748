//! Upstreams as a bank runs them: several TLS backends on 127.0.0.1 that answer only the
//! gateway's own client certificate, balanced, health-checked, one killed under load.
//! Each test starts the usual world (authorization server, PKI) and a second gateway whose
//! `gobank` upstream is the table under test.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use fapi_devkit::fixtures::{Bank, BankData, BankTls, Running};
use fapi_devkit::pki::DevPki;
use fapi_enforcement::config::GatewayConfig;
use fapi_gateway_server::server::RunningGateway;

/// A gateway like the world's, on its own ports, with `gobank` replaced by `upstream`
/// (the body of `[upstreams.gobank]`; `certs/` is the world's PKI).
struct Gateway {
    _running: RunningGateway,
    addr: SocketAddr,
    admin: SocketAddr,
}

/// The world's gateway.toml on `addr` and `admin`, with `gobank` replaced by `upstream`;
/// written beside it (so `certs/` is the world's PKI).
fn config_file(w: &World, upstream: &str, addr: SocketAddr, admin: SocketAddr) -> std::path::PathBuf {
    let text = std::fs::read_to_string(w.dir.path().join("gateway.toml")).unwrap();
    let mut text: String = text
        .lines()
        .filter(|l| !l.starts_with("gobank = "))
        .map(|l| {
            l.replace(&w.gateway_addr.to_string(), &addr.to_string())
                .replace(&w.admin_addr.to_string(), &admin.to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    text.push_str(&format!("\n[upstreams.gobank]\n{upstream}\n"));
    let path = w.dir.path().join(format!("gateway-{}.toml", addr.port()));
    std::fs::write(&path, text).unwrap();
    path
}

impl Gateway {
    async fn start(w: &World, upstream: &str) -> Gateway {
        let (addr, admin) = (free_port(), free_port());
        let path = config_file(w, upstream, addr, admin);
        let config = GatewayConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
        Gateway { _running: RunningGateway::start(config).await.unwrap(), addr, admin }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn get(&self, w: &World, token: &str) -> reqwest::Response {
        w.tpp.get(self.url("/gobank/accounts")).bearer_auth(token).send().await.unwrap()
    }

    async fn metric(&self, sample: &str) -> f64 {
        let r = reqwest::Client::new()
            .get(format!("http://{}/metrics", self.admin))
            .bearer_auth(ADMIN_SECRET)
            .send()
            .await
            .unwrap();
        metric_value(&r.text().await.unwrap(), sample)
    }
}

/// A Go Bank backend over TLS on 127.0.0.1, answering only certificates of `client_ca`.
struct Backend {
    bank: Arc<Bank>,
    addr: SocketAddr,
    tls: BankTls,
    running: Option<Running>,
}

impl Backend {
    async fn start(w: &World, client_ca: &std::path::Path) -> Backend {
        let (certificate, private_key) =
            w.pki.mint_server_certificate("bank", &["bank.internal", "127.0.0.1"]).unwrap();
        let tls = BankTls { certificate, private_key, client_ca: client_ca.to_path_buf() };
        let bank = Bank::new(BankData::go_bank());
        let running = bank.serve_tls("127.0.0.1:0".parse().unwrap(), &tls).await.unwrap();
        Backend { bank, addr: running.addr, tls, running: Some(running) }
    }

    /// Stops it and closes its connections, as a crashed instance would.
    async fn kill(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop();
        }
        // The aborted tasks drop their sockets on the runtime's next turn.
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{} still accepts connections", self.addr);
    }

    async fn restart(&mut self) {
        self.running = Some(self.bank.serve_tls(self.addr, &self.tls).await.unwrap());
    }

    fn requests(&self) -> u64 {
        self.bank.requests()
    }
}

/// mTLS to the bank: the dev CA's bank certificate for `bank.internal`, the gateway's
/// client certificate.
fn tls_upstream(targets: &[SocketAddr], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|t| format!("\"https://{t}\"")).collect();
    format!(
        "targets = [{}]\nsni = \"bank.internal\"\nca = \"certs/ca.pem\"\nclient_certificate = \"certs/gateway-client.pem\"\nclient_private_key = \"certs/gateway-client.key\"\n{extra}",
        targets.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_to_the_bank_with_the_gateways_own_certificate() {
    let w = World::start().await;
    let backend = Backend::start(&w, &w.pki.ca()).await;
    let gateway = Gateway::start(&w, &tls_upstream(&[backend.addr], "")).await;
    let (_, token) = w.go_bank_token().await;
    let r = gateway.get(&w, &token).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["Data"]["Account"][0]["AccountId"], "GB-1001");
    assert_eq!(backend.requests(), 1);
    let last = backend.bank.last_headers().unwrap();
    assert_eq!(last.get("x-subject").unwrap(), "alice", "identity headers reach the bank over TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_that_cannot_be_trusted_or_does_not_trust_the_gateway_gets_nothing() {
    let w = World::start().await;
    let other = tempfile::tempdir().unwrap();
    let other_pki = DevPki::at(other.path());
    other_pki.generate().unwrap();
    let other_ca = other_pki.ca().display().to_string();
    // The bank trusts only another CA's clients: the gateway's certificate is refused.
    let distrustful = Backend::start(&w, &other_pki.ca()).await;
    let trusting = Backend::start(&w, &w.pki.ca()).await;
    let cases = [
        ("the bank refuses the gateway's certificate", tls_upstream(&[distrustful.addr], "")),
        (
            "the bank's certificate is from a CA the gateway does not trust",
            tls_upstream(&[trusting.addr], "").replace("certs/ca.pem", &other_ca),
        ),
        (
            "the bank's certificate does not name the SNI",
            tls_upstream(&[trusting.addr], "").replace("bank.internal", "other-bank.internal"),
        ),
        (
            "no client certificate",
            tls_upstream(&[trusting.addr], "")
                .lines()
                .filter(|l| !l.starts_with("client_"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    ];
    let (_, token) = w.go_bank_token().await;
    for (case, upstream) in cases {
        let gateway = Gateway::start(&w, &upstream).await;
        let r = gateway.get(&w, &token).await;
        assert_eq!(r.status(), 502, "{case}");
        assert!(r.headers().contains_key("x-fapi-interaction-id"), "{case}");
        assert_eq!(distrustful.requests() + trusting.requests(), 0, "{case}: nothing forwarded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_and_consent_hashing_keeps_a_consent_on_one_target() {
    let w = World::start().await;
    let (a, b) = (Backend::start(&w, &w.pki.ca()).await, Backend::start(&w, &w.pki.ca()).await);
    let round_robin = Gateway::start(&w, &tls_upstream(&[a.addr, b.addr], "")).await;
    let (_, token) = w.go_bank_token().await;
    for _ in 0..20 {
        assert_eq!(round_robin.get(&w, &token).await.status(), 200);
    }
    assert_eq!((a.requests(), b.requests()), (10, 10), "each target in turn");

    let hashing = Gateway::start(&w, &tls_upstream(&[a.addr, b.addr], "balancing = \"consent_hash\"")).await;
    let mut used = [false, false];
    for consent in 0..16 {
        let (_, token) = w.go_bank_token().await;
        let before = (a.requests(), b.requests());
        for _ in 0..5 {
            assert_eq!(hashing.get(&w, &token).await.status(), 200);
        }
        let after = (a.requests() - before.0, b.requests() - before.1);
        assert!(after == (5, 0) || after == (0, 5), "consent {consent} went to both targets: {after:?}");
        used[usize::from(after.1 == 5)] = true;
        if used == [true, true] {
            return;
        }
    }
    panic!("16 consents all hashed to one target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_killed_under_load_fails_no_idempotent_request_and_no_payment_is_sent_twice() {
    let w = World::start().await;
    let (mut a, b) = (Backend::start(&w, &w.pki.ca()).await, Backend::start(&w, &w.pki.ca()).await);
    // Long ejection, no health checks: the dead target stays out once a connect failed.
    let gateway = Gateway::start(&w, &tls_upstream(&[a.addr, b.addr], "ejection_ms = 60000")).await;
    let (_, token) = w.go_bank_token().await;
    let mut failed = Vec::new();
    for i in 0..200 {
        if i == 50 {
            a.kill().await;
        }
        let status = gateway.get(&w, &token).await.status();
        if status != 200 {
            failed.push((i, status));
        }
    }
    assert!(failed.is_empty(), "failed GETs: {failed:?}");
    assert_eq!(a.requests(), 25, "the killed target served its turns until killed");
    assert_eq!(b.requests(), 175);
    let retried =
        gateway.metric("fapi_gateway_upstream_connect_failures_total{retried=\"true\",upstream=\"gobank\"}").await;
    assert!(retried >= 1.0, "the first request after the kill was retried on the other target");

    // A payment is never retried: with a fresh gateway (nothing ejected yet), the POST
    // whose turn is the dead target fails rather than reach the bank a second way.
    let gateway = Gateway::start(&w, &tls_upstream(&[a.addr, b.addr], "ejection_ms = 60000")).await;
    let consent = w.consent_of_kind(&w.tpp, "gobank", "domestic-payment-consent", &[], "alice", &["GB-1001"]).await;
    let pay_token = w.token(&w.tpp, Some(&consent), "openid payments", None).await;
    let body = serde_json::json!({"Data": {"ConsentId": consent, "Initiation": {"InstructedAmount": {"Amount": "1.00", "Currency": "GBP"}}}, "Risk": {}}).to_string();
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = w
            .tpp
            .post(gateway.url("/gobank/domestic-payments"))
            .bearer_auth(&pay_token)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, vec![201, 502], "one POST met the dead target and was not retried");
    assert_eq!(b.bank.payments(), 1, "the bank received each payment at most once");
    let not_retried =
        gateway.metric("fapi_gateway_upstream_connect_failures_total{retried=\"false\",upstream=\"gobank\"}").await;
    assert_eq!(not_retried, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_health_check_brings_a_target_back() {
    let w = World::start().await;
    let (mut a, b) = (Backend::start(&w, &w.pki.ca()).await, Backend::start(&w, &w.pki.ca()).await);
    let checks = "ejection_ms = 600000\n[upstreams.gobank.health_check]\npath = \"/health\"\ninterval_ms = 200\ntimeout_ms = 500\nhealthy_threshold = 1\nunhealthy_threshold = 1\n";
    let gateway = Gateway::start(&w, &tls_upstream(&[a.addr, b.addr], checks)).await;
    let (_, token) = w.go_bank_token().await;
    a.kill().await;
    for _ in 0..10 {
        assert_eq!(gateway.get(&w, &token).await.status(), 200);
    }
    let before = a.requests();
    // Out: the checks fail now, and the ejection alone would last ten minutes.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..6 {
        assert_eq!(gateway.get(&w, &token).await.status(), 200);
    }
    assert_eq!(a.requests(), before);
    a.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.requests() == before {
        assert!(Instant::now() < deadline, "the restarted target got no request within 10 s");
        assert_eq!(gateway.get(&w, &token).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP server that accepts and never says anything (a hung backend).
async fn silent_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeouts_answer_504_within_their_bound() {
    let w = World::start().await;
    let (silent, _task) = silent_server().await;
    let (_, token) = w.go_bank_token().await;
    let cases = [
        ("read timeout", format!("targets = [\"http://{silent}\"]\nread_timeout_ms = 300")),
        ("TLS handshake under the connect timeout", tls_upstream(&[silent], "connect_timeout_ms = 300")),
        ("total timeout", format!("targets = [\"http://{silent}\"]\nread_timeout_ms = 20000\ntotal_timeout_ms = 400")),
    ];
    for (case, upstream) in cases {
        let gateway = Gateway::start(&w, &upstream).await;
        let started = Instant::now();
        let r = gateway.get(&w, &token).await;
        let took = started.elapsed();
        assert_eq!(r.status(), 504, "{case}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.UnexpectedError", "{case}");
        assert!(took < Duration::from_secs(3), "{case}: took {took:?}");
        let sample = "fapi_gateway_requests_total{api=\"gobank\",decision=\"upstream_timeout\",method=\"GET\",route=\"/accounts\",status=\"504\"}";
        assert_eq!(gateway.metric(sample).await, 1.0, "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_what_is_wrong_with_an_upstream_at_its_line() {
    let w = World::start().await;
    let text = std::fs::read_to_string(w.dir.path().join("gateway.toml")).unwrap();
    let mut text: String = text.lines().filter(|l| !l.starts_with("gobank = ")).collect::<Vec<_>>().join("\n");
    text.push_str("\n[upstreams.gobank]\ntargets = [\"https://127.0.0.1:1\"]\nca = \"certs/missing.pem\"\nclient_certificate = \"certs/gateway-client.pem\"\n");
    let line_of = |key: &str| text.lines().collect::<Vec<_>>().iter().rposition(|l| l.starts_with(key)).unwrap() + 1;
    let path = w.dir.path().join("bad-upstream.toml");
    std::fs::write(&path, &text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let out = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let file = path.display().to_string();
    assert!(out.contains(&format!("{file}:{}: upstream `gobank`: ca ", line_of("ca = "))), "{out}");
    assert!(
        out.contains(&format!(
            "{file}:{}: upstream `gobank`: client_certificate and client_private_key go together",
            line_of("client_certificate = ")
        )),
        "{out}"
    );
    assert!(!out.contains("unknown upstream"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fapi_gateway_run_the_health_checks_are_a_service_of_the_server_and_stop_with_it() {
    let w = World::start().await;
    let (a, b) = (Backend::start(&w, &w.pki.ca()).await, Backend::start(&w, &w.pki.ca()).await);
    let (addr, admin) = (free_port(), free_port());
    let checks = "[upstreams.gobank.health_check]\npath = \"/health\"\ninterval_ms = 100\n";
    let path = config_file(&w, &tls_upstream(&[a.addr, b.addr], checks), addr, admin);
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "threads = 2",
        "threads = 2\ngrace_period_seconds = 1\ngraceful_shutdown_timeout_seconds = 1",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["run", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    fapi_gateway_server::server::wait_for_listener(addr).await.unwrap();
    let (_, token) = w.go_bank_token().await;
    let r = w.tpp.get(format!("https://{addr}/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let checked = || a.bank.health_checks() + b.bank.health_checks();
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.bank.health_checks() < 2 || b.bank.health_checks() < 2 {
        assert!(Instant::now() < deadline, "no health checks over mutual TLS within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stopping = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if stopping.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("still running 10 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let after_exit = checked();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(checked(), after_exit, "no health check after the server stopped");
}
