//! What `fapi-gateway run` says when it starts and while it serves: one line per listener
//! and the APIs and routes loaded, no terminal colour in a file, and per-connection TLS
//! errors counted rather than logged at warn.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;

fn spawn_gateway(config: &Path, log: &Path) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_fapi-gateway"))
        .args(["run", "--config"])
        .arg(config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TLS client that trusts the gateway but presents no certificate: its handshake fails.
async fn handshake_without_certificate(w: &World, gateway: std::net::SocketAddr) {
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    if let Ok(mut tls) = connector.connect(name, tcp).await {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = tls.write_all(b"GET /gobank/accounts HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tls.read_to_end(&mut buf)).await;
    }
}

/// A TLS connection with the TPP's certificate.
async fn raw_tls(w: &World, gateway: std::net::SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap();
    let key = fapi_enforcement::client_identity::read_private_key(&w.pki.tpp_key()).unwrap();
    let config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).unwrap();
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

/// As [`raw_tls`], offering only HTTP/2 by ALPN.
async fn raw_tls_h2(
    w: &World,
    gateway: std::net::SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap();
    let key = fapi_enforcement::client_identity::read_private_key(&w.pki.tpp_key()).unwrap();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_says_each_listener_and_what_was_loaded_without_colour_and_tls_noise_is_counted() {
    let w = World::start().await; // its fixtures and PKI; its in-process gateway is not used
    let (gateway, admin) = (free_port(), free_port());
    let dir = w.dir.path().join("startup");
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&dir, &w.fixtures, gateway, admin, &Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace("\"certs/", "\"../certs/");
    std::fs::write(&config, text).unwrap();
    let log = dir.join("stderr.log");
    let _child = Killed(spawn_gateway(&config, &log));
    fapi_gateway_server::server::wait_for_listener(gateway).await.unwrap();
    fapi_gateway_server::server::wait_for_listener(admin).await.unwrap();

    let (_, token) = w.go_bank_token().await;
    let ok = w.tpp.get(format!("https://{gateway}/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    for _ in 0..5 {
        handshake_without_certificate(&w, gateway).await;
    }
    // Plain HTTP and garbage on the TLS port, and a TCP connection closed at once.
    for bytes in [&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..], b"\x16\x03\x01\x00\x05hello", b""] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(gateway).await.unwrap();
        let _ = tcp.write_all(bytes).await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
    }
    // A client with a certificate that drops its connection without close_notify.
    for _ in 0..3 {
        let mut stream = raw_tls(&w, gateway).await;
        use tokio::io::AsyncWriteExt;
        let _ = stream.write_all(b"GET /gobank/accounts HTTP/1.1\r\nhost: localhost\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (tcp, _) = stream.into_inner();
        drop(tcp);
    }
    // HTTP/2 chosen by ALPN, then no preface: garbage, or nothing at all.
    for bytes in [&b"not an HTTP/2 preface at all, no\r\n\r\n"[..], b""] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = raw_tls_h2(&w, gateway).await;
        let _ = stream.write_all(bytes).await;
        if bytes.is_empty() {
            let _ = stream.shutdown().await;
        }
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut buf)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut logs = String::new();
    for _ in 0..50 {
        logs = std::fs::read_to_string(&log).unwrap();
        if logs.contains("listening: /healthz") && logs.contains("listening: accepting connections") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!logs.contains('\u{1b}'), "ANSI escapes in a log file:\n{logs}");
    let line = |needle: &str| logs.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(line("configuration loaded"), 1, "{logs}");
    let loaded = logs.lines().find(|l| l.contains("configuration loaded")).unwrap();
    assert!(loaded.contains("apis=2") && loaded.contains("routes=41"), "{loaded}");
    assert_eq!(line("listening: accepting connections"), 1, "{logs}");
    assert!(logs.contains(&format!("address={gateway}")), "{logs}");
    assert_eq!(line("listening: /healthz"), 1, "{logs}");
    assert!(logs.contains(&format!("address={admin}")), "{logs}");
    // Failed handshakes: counted, and no warning or error line per connection.
    let noisy: Vec<&str> = logs.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(noisy.is_empty(), "{noisy:?}");
    let metrics = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(ADMIN_SECRET)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric_value(&metrics, "fapi_gateway_tls_handshake_failures_total") >= 5.0, "{metrics}");
    let h2 = metric_value(&metrics, r#"fapi_gateway_connection_errors_total{kind="h2_handshake"}"#);
    assert_eq!(h2, 2.0, "{metrics}");
}
