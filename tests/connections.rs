//! Connection exhaustion (issue 11, finding 5): deadlines on the TLS handshake, the request
//! head and idle keep-alive, and caps on open connections in all and per client address,
//! against real TLS sockets on loopback. Small configured values keep each test short.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

fn with_connections(section: &str) -> Options {
    Options { config_extra: format!("[connections]\n{section}\n"), ..Options::default() }
}

/// A TLS connection to the gateway presenting the TPP's certificate, offering `alpn`.
async fn tls(w: &World, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for c in fapi_enforcement::client_identity::read_certificates(&w.pki.ca()).unwrap() {
        roots.add(c).unwrap();
    }
    let certs = fapi_enforcement::client_identity::read_certificates(&w.pki.tpp_cert()).unwrap();
    let key = fapi_enforcement::client_identity::read_private_key(&w.pki.tpp_key()).unwrap();
    let mut config =
        rustls::ClientConfig::builder().with_root_certificates(roots).with_client_auth_cert(certs, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(w.gateway_addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap()
}

/// Reads until the peer closes (end of stream or error); how long that took, or `None`
/// if it stayed open for `limit`.
async fn closed_within(stream: &mut (impl AsyncRead + Unpin), limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed())?;
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

/// One HTTP/1.1 response with a Content-Length body: its status code.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> u16 {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed before a response: {}", String::from_utf8_lossy(&data));
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content-length");
    while data.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0);
        data.extend_from_slice(&buf[..n]);
    }
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

async fn timeouts(w: &World, phase: &str) -> f64 {
    w.metric(&format!("fapi_gateway_connection_timeouts_total{{phase=\"{phase}\"}}")).await
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(to).await.unwrap()
}

/// Polls `sample` until it equals `value` (at most 5 s).
async fn wait_for_metric(w: &World, sample: &str, value: f64) {
    for _ in 0..100 {
        if w.metric(sample).await == value {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{sample} never became {value}: {}", w.metric(sample).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_handshake_is_closed_at_the_handshake_deadline() {
    let w = World::start_with(with_connections("handshake_timeout_seconds = 1")).await;
    // Silent, and one that stops half-way through a ClientHello.
    let mut silent = TcpStream::connect(w.gateway_addr).await.unwrap();
    let mut partial = TcpStream::connect(w.gateway_addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]).await.unwrap();
    let (a, b) = tokio::join!(
        closed_within(&mut silent, Duration::from_secs(5)),
        closed_within(&mut partial, Duration::from_secs(5))
    );
    for (what, took) in [("silent", a), ("partial ClientHello", b)] {
        let took = took.unwrap_or_else(|| panic!("{what}: still open after 5 s"));
        assert!(took >= Duration::from_millis(800), "{what}: closed after {took:?}, before the deadline");
    }
    assert_eq!(timeouts(&w, "handshake").await, 2.0);
    wait_for_metric(&w, "fapi_gateway_connections_open", 0.0).await;
    // The listener still serves.
    let (_, token) = w.go_bank_token().await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts", &token).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    let w = World::start_with(with_connections("request_head_timeout_seconds = 1")).await;
    let (_, token) = w.go_bank_token().await;
    let head = format!("GET /gobank/accounts HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut stream = tls(&w, &[b"http/1.1"]).await;
    let started = Instant::now();
    // One byte every 200 ms: each read is quick, the whole head would take minutes.
    let mut closed = None;
    for byte in head.as_bytes() {
        if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
            closed = Some(started.elapsed());
            break;
        }
        if let Some(_took) = closed_within(&mut stream, Duration::from_millis(200)).await {
            closed = Some(started.elapsed());
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(6), "still open after 6 s");
    }
    let closed = closed.expect("the whole head went through");
    assert!(closed >= Duration::from_millis(800) && closed < Duration::from_secs(4), "closed after {closed:?}");
    assert_eq!(w.bank_requests(), 0, "no request reached the bank");
    assert_eq!(timeouts(&w, "request_head").await, 1.0);
    // A head sent at once on a fresh connection is served.
    let mut fresh = tls(&w, &[b"http/1.1"]).await;
    fresh.write_all(head.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut fresh).await, 200);
    assert_eq!(w.bank_requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_without_its_preface_is_closed_at_the_head_deadline() {
    let w = World::start_with(with_connections("request_head_timeout_seconds = 1")).await;
    let mut stream = tls(&w, &[b"h2"]).await;
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let took = closed_within(&mut stream, Duration::from_secs(5)).await.expect("still open after 5 s");
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
    assert_eq!(timeouts(&w, "request_head").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    let w = World::start_with(with_connections("idle_timeout_seconds = 1")).await;
    // Refused (no token) but kept alive: the gateway answers without closing.
    let request = b"GET /gobank/accounts HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut stream = tls(&w, &[b"http/1.1"]).await;
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 401);
    // Within the idle timeout the connection is reused ...
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.write_all(request).await.unwrap();
    assert_eq!(read_response(&mut stream).await, 401);
    // ... and left idle, it is closed.
    let took = closed_within(&mut stream, Duration::from_secs(5)).await.expect("still open after 5 s");
    assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(3), "closed after {took:?}");
    assert_eq!(timeouts(&w, "idle").await, 1.0);
    assert_eq!(timeouts(&w, "request_head").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_cap_are_refused_before_tls() {
    let options = with_connections("max_connections_per_ip = 3\nmax_connections = 5");
    let w = World::start_with(options).await;
    // Three silent connections from 127.0.0.1: the fourth from there is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(w.gateway_addr).await.unwrap());
    }
    wait_for_metric(&w, "fapi_gateway_connections_open", 3.0).await;
    let mut fourth = TcpStream::connect(w.gateway_addr).await.unwrap();
    let took = closed_within(&mut fourth, Duration::from_secs(3)).await.expect("the fourth was kept");
    assert!(took < Duration::from_secs(1), "closed after {took:?}");
    assert_eq!(w.metric("fapi_gateway_connections_refused_total{reason=\"per_ip\"}").await, 1.0);
    // A TLS client from there fails too, before any handshake.
    let refused = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
    assert!(refused.get(w.url("/gobank/accounts")).send().await.is_err());
    assert!(w.metric("fapi_gateway_connections_refused_total{reason=\"per_ip\"}").await >= 2.0);
    // Another address has places of its own, up to the cap on all connections (5).
    let mut others = Vec::new();
    for _ in 0..2 {
        others.push(connect_from("127.0.0.2", w.gateway_addr).await);
    }
    wait_for_metric(&w, "fapi_gateway_connections_open", 5.0).await;
    let mut sixth = connect_from("127.0.0.2", w.gateway_addr).await;
    assert!(closed_within(&mut sixth, Duration::from_secs(3)).await.is_some(), "the sixth was kept");
    assert_eq!(w.metric("fapi_gateway_connections_refused_total{reason=\"max_connections\"}").await, 1.0);
    assert_eq!(w.metric("fapi_gateway_connections_max").await, 5.0);
    // Once they close, their places are free: a legitimate TPP is served.
    drop(held);
    drop(others);
    wait_for_metric(&w, "fapi_gateway_connections_open", 0.0).await;
    let (_, token) = w.go_bank_token().await;
    let fresh = client(&w.pki.ca(), Some((&w.pki.tpp_cert(), &w.pki.tpp_key())), false);
    assert_eq!(fresh.get(w.url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap().status(), 200);
    assert_eq!(timeouts(&w, "handshake").await, 0.0, "the held ones closed before their deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_does_not_start_on_a_taken_port() {
    let w = World::start().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = w.dir.path().join("taken");
    std::fs::create_dir_all(&dir).unwrap();
    let config = write_config(&dir, &w.fixtures, addr, free_port(), &Options::default());
    let text = std::fs::read_to_string(&config).unwrap().replace("\"certs/", "\"../certs/");
    std::fs::write(&config, text).unwrap();
    let config = fapi_enforcement::config::GatewayConfig::load(&config).unwrap();
    let started = Instant::now();
    let result =
        tokio::time::timeout(Duration::from_secs(5), fapi_gateway_server::server::RunningGateway::start(config)).await;
    let error = match result {
        Ok(Err(e)) => e,
        Ok(Ok(_)) => panic!("started on a taken port"),
        Err(_) => panic!("still starting after 5 s"),
    };
    assert_eq!(error.to_string(), format!("cannot listen on {addr}: address in use"));
    assert!(started.elapsed() < Duration::from_secs(1));
    // And readiness says ready only while the listener accepts: here it does.
    let (status, body) = w.admin("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connections_section_is_validated() {
    let w = World::start().await;
    let dir = w.dir.path().join("invalid");
    std::fs::create_dir_all(&dir).unwrap();
    let section = "[connections]\nhandshake_timeout_seconds = 0\nidle_timeout_seconds = 7200\nmax_connections = 0\nmax_connections_per_ip = 0\n";
    let options = Options { config_extra: section.into(), ..Options::default() };
    let config = write_config(&dir, &w.fixtures, free_port(), free_port(), &options);
    let text = std::fs::read_to_string(&config).unwrap().replace("\"certs/", "\"../certs/");
    std::fs::write(&config, &text).unwrap();
    let problems = fapi_enforcement::config::GatewayConfig::load(&config).unwrap_err().to_string();
    for expected in [
        "connections.handshake_timeout_seconds must be above 0 and at most 3600",
        "connections.idle_timeout_seconds must be above 0 and at most 3600",
        "connections.max_connections must be above 0",
        "connections.max_connections_per_ip must be above 0",
    ] {
        assert!(problems.contains(expected), "{expected}: {problems}");
    }
    // Unknown keys are errors, as everywhere.
    std::fs::write(&config, format!("{text}max_requests = 1\n")).unwrap();
    let problems = fapi_enforcement::config::GatewayConfig::load(&config).unwrap_err().to_string();
    assert!(problems.contains("unknown field `max_requests`"), "{problems}");
    // The defaults.
    let defaults = fapi_enforcement::config::ConnectionLimits::default();
    assert_eq!(defaults.handshake_timeout, Duration::from_secs(10));
    assert_eq!(defaults.request_head_timeout, Duration::from_secs(10));
    assert_eq!(defaults.idle_timeout, Duration::from_secs(60));
    assert_eq!((defaults.max_connections, defaults.max_connections_per_ip), (None, 256));
}
