//! Forward-auth mode end to end: Debian's real nginx (`auth_request`) and Caddy
//! (`forward_auth`), configured with the snippets in `examples/forward-auth/` that the
//! README shows verbatim, terminate mutual TLS with the dev PKI in front of the mock Go
//! Bank and ask the gateway (`mode = "forward_auth"`) for each decision.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const INTERACTION_ID: &str = "x-fapi-interaction-id";

fn forward_auth(client_cert_header: &str) -> Options {
    Options {
        listener_extra: format!(
            "mode = \"forward_auth\"\ntls = false\ntrusted_proxies = [\"127.0.0.1/32\"]\nclient_cert_header = \"{client_cert_header}\""
        ),
        ..Options::default()
    }
}

fn snippet(name: &str) -> String {
    std::fs::read_to_string(repo_path("examples/forward-auth").join(name)).unwrap()
}

/// nginx or Caddy in the foreground; stopped (SIGTERM, then SIGKILL) when dropped.
struct Proxy {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        fapi_devkit::bench_nginx::stop(&mut self.child);
    }
}

impl Proxy {
    /// Waits (up to 10 s) until it listens; its log on failure.
    async fn listening(mut self) -> Proxy {
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_ok() {
                return self;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the proxy exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the proxy did not listen on {}: {}", self.addr, std::fs::read_to_string(&self.log).unwrap_or_default());
    }

    /// By name, so that the client sends SNI (Caddy refuses requests whose Host is not
    /// their SNI when client certificates are required, 421).
    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

fn installed(binary: &str, package: &str) -> PathBuf {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{binary} is not installed: `apt-get install {package}` (.ci/run does)"))
}

/// nginx with `examples/forward-auth/nginx.conf` (its placeholders filled) in its `http` block.
async fn start_nginx(w: &World) -> Proxy {
    let nginx = installed("nginx", "nginx");
    let dir = w.dir.path().join("nginx");
    std::fs::create_dir_all(&dir).unwrap();
    let addr = free_port();
    let site = snippet("nginx.conf")
        .replace("{LISTEN}", &addr.to_string())
        .replace("{CERT}", &w.pki.server_cert().display().to_string())
        .replace("{KEY}", &w.pki.server_key().display().to_string())
        .replace("{CA}", &w.pki.ca().display().to_string())
        .replace("{GATEWAY}", &w.gateway_addr.to_string())
        .replace("{GOBANK}", &w.fixtures.go_bank_addr.to_string());
    assert!(!site.contains("{LISTEN}") && !site.contains("{GOBANK}"));
    std::fs::write(dir.join("forward-auth.conf"), site).unwrap();
    let d = dir.display();
    // Everything nginx writes stays in the test's folder; workers run as root to reach it.
    let main = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n    access_log off;\n    client_body_temp_path {d}/client_body;\n    proxy_temp_path {d}/proxy_temp;\n\
         fastcgi_temp_path {d}/fastcgi_temp;\n    uwsgi_temp_path {d}/uwsgi_temp;\n    scgi_temp_path {d}/scgi_temp;\n\
         include {d}/forward-auth.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    let log = dir.join("error.log");
    let child = Command::new(nginx)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("cannot start nginx");
    Proxy { addr, child, log }.listening().await
}

/// Caddy with `examples/forward-auth/Caddyfile` as is (it reads its addresses and files
/// from the environment), behind test-only global options.
async fn start_caddy(w: &World) -> Proxy {
    let caddy = installed("caddy", "caddy");
    let dir = w.dir.path().join("caddy");
    std::fs::create_dir_all(&dir).unwrap();
    let addr = free_port();
    let site = repo_path("examples/forward-auth/Caddyfile");
    // No admin endpoint, no certificate automation or port-80 redirects, no HTTP/3 (UDP);
    // loopback only.
    let main = format!(
        "{{\n\tadmin off\n\tauto_https off\n\tdefault_bind 127.0.0.1\n\tservers {{\n\t\tprotocols h1 h2\n\t}}\n}}\n\nimport {}\n",
        site.display()
    );
    std::fs::write(dir.join("Caddyfile"), main).unwrap();
    let log = dir.join("caddy.log");
    let child = Command::new(caddy)
        .args(["run", "--adapter", "caddyfile", "--config"])
        .arg(dir.join("Caddyfile"))
        .env("HOME", &dir)
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("FAPI_SITE", format!("https://localhost:{}", addr.port()))
        .env("FAPI_TLS_CERT", w.pki.server_cert())
        .env("FAPI_TLS_KEY", w.pki.server_key())
        .env("FAPI_CLIENT_CA", w.pki.ca())
        .env("FAPI_GATEWAY", w.gateway_addr.to_string())
        .env("GOBANK", w.fixtures.go_bank_addr.to_string())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("cannot start caddy");
    Proxy { addr, child, log }.listening().await
}

/// Status, challenge, interaction id and body of a response.
async fn answer(r: reqwest::Response) -> (u16, String, String, Value) {
    let status = r.status().as_u16();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    let (challenge, id) = (header("www-authenticate"), header(INTERACTION_ID));
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, challenge, id, body)
}

/// Every case through a proxy at `proxy`: allowed with the grant's identity headers
/// (and none of the client's), and each class of refusal passed to the client as the
/// gateway wrote it, with nothing reaching the bank.
async fn the_proxy_enforces_the_gateways_decisions(w: &World, proxy: &Proxy) {
    let (consent, token) = w.go_bank_token().await;
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";

    // Allowed: the bank gets the grant's identity headers, not the client's forgeries.
    let r = w
        .tpp
        .get(proxy.url("/gobank/accounts"))
        .bearer_auth(&token)
        .header(INTERACTION_ID, id)
        .header("X-Consent-Id", "forged")
        .header("X-Subject", "bob")
        .header("X-Client-Id", "someone-else")
        .header("X-Consent-Accounts", "GB-2001")
        .header("X-Fapi-Grant", "forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers().get(INTERACTION_ID).map(|v| v.to_str().unwrap()), Some(id), "{:?}", r.headers());
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 200, "{body}");
    let accounts: Vec<&str> =
        body["Data"]["Account"].as_array().unwrap().iter().map(|a| a["AccountId"].as_str().unwrap()).collect();
    assert_eq!(accounts, ["GB-1001"], "alice's granted account only: {body}");
    let seen = w.fixtures.go_bank.last_headers().unwrap();
    let at_bank = |n: &str| seen.get_all(n).iter().map(|v| v.to_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(at_bank("x-consent-id"), [consent.as_str()]);
    assert_eq!(at_bank("x-subject"), ["alice"]);
    assert_eq!(at_bank("x-consent-accounts"), ["GB-1001"]);
    assert_eq!(at_bank("x-client-id"), ["financroo"]);
    assert_eq!(at_bank(INTERACTION_ID), [id]);
    assert!(at_bank("x-granted-scopes")[0].contains("accounts"));
    assert!(at_bank("authorization").is_empty(), "the token stays at the proxy");
    // The gateway's grant JWT, passed on by the proxy (and verified by the bank), not the client's.
    let grant = at_bank("x-fapi-grant");
    assert!(grant.len() == 1 && grant[0] != "forged", "{grant:?}");
    assert_eq!(w.fixtures.go_bank.grant_checker().unwrap().rejected.load(std::sync::atomic::Ordering::SeqCst), 0);
    let allowed = w.bank_requests();

    // No token: 401 with the bare challenge and the Open Banking body.
    let r = w.tpp.get(proxy.url("/gobank/accounts")).send().await.unwrap();
    let (status, challenge, iid, body) = answer(r).await;
    assert_eq!((status, challenge.as_str()), (401, r#"Bearer realm="fapi-gateway""#), "{body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Missing");
    assert!(uuid::Uuid::try_parse(&iid).is_ok() && body["Id"] == iid.as_str(), "{iid} {body}");

    // An unknown token: 401 invalid_token.
    let r = w.tpp.get(proxy.url("/gobank/accounts")).bearer_auth("no-such-token").send().await.unwrap();
    let (status, challenge, _, body) = answer(r).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Invalid");

    // An account the consent did not grant: 403 with the Open Banking body (the client's
    // own X-Forwarded-* headers do not change what the gateway decides on).
    let r = w
        .tpp
        .get(proxy.url("/gobank/accounts/GB-1002"))
        .bearer_auth(&token)
        .header("X-Forwarded-Uri", "/gobank/accounts/GB-1001")
        .header("X-Forwarded-Method", "GET")
        .send()
        .await
        .unwrap();
    let (status, challenge, _, body) = answer(r).await;
    assert_eq!(status, 403, "{body}");
    assert!(challenge.contains(r#"error="insufficient_scope""#), "{challenge}");
    assert_eq!(body["Code"], "403 Forbidden");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Resource.ConsentMismatch");
    assert!(body["Message"].as_str().unwrap().contains("GB-1002"), "{body}");

    // No route: 404 (nginx's auth_request would make it a 500).
    let r = w.tpp.get(proxy.url("/gobank/no-such-thing")).bearer_auth(&token).send().await.unwrap();
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Resource.NotFound");

    // The certificate-bound token from the other TPP's certificate: 401.
    let r = w.other_tpp.get(proxy.url("/gobank/accounts")).bearer_auth(&token).send().await.unwrap();
    let (status, challenge, _, body) = answer(r).await;
    assert_eq!(status, 401, "{body}");
    assert!(challenge.contains("not bound to this client certificate"), "{challenge}");

    // A body on a route that takes none (the length comes in X-Forwarded-Content-Length): 400.
    let r = w.tpp.get(proxy.url("/gobank/accounts")).bearer_auth(&token).body("{}").send().await.unwrap();
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["Message"].as_str().unwrap().contains("takes no request body"), "{body}");

    // A route that reads the body (payments) needs the gateway in the data path.
    let r = w
        .tpp
        .post(proxy.url("/gobank/domestic-payments"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"Data": {"ConsentId": consent}}))
        .send()
        .await
        .unwrap();
    let (status, _, _, body) = answer(r).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["Message"].as_str().unwrap().contains("data path"), "{body}");

    assert_eq!(w.bank_requests(), allowed, "no refused request reached the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_auth_request_with_the_gateway_deciding() {
    let w = World::start_with(forward_auth("x-ssl-client-cert")).await;
    let nginx = start_nginx(&w).await;
    the_proxy_enforces_the_gateways_decisions(&w, &nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_forward_auth_with_the_gateway_deciding() {
    let w = World::start_with(forward_auth("rfc9440")).await;
    let caddy = start_caddy(&w).await;
    the_proxy_enforces_the_gateways_decisions(&w, &caddy).await;
}

/// The protocol without a proxy: a trusted caller gets 200 and the identity headers; a
/// call from another address is refused, whatever it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_decision_is_answered_to_trusted_proxies_only() {
    let w = World::start_with(forward_auth("x-ssl-client-cert")).await;
    let (consent, token) = w.go_bank_token().await;
    let pem = std::fs::read_to_string(w.pki.tpp_cert()).unwrap();
    let escaped = percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC).to_string();
    let call = |from: &str| {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<std::net::IpAddr>().unwrap())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        client
            .get(format!("http://{}/auth", w.gateway_addr))
            .bearer_auth(&token)
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/gobank/accounts")
            .header("x-ssl-client-cert", escaped.clone())
            .send()
    };
    let r = call("127.0.0.1").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-consent-id").unwrap(), consent.as_str());
    assert_eq!(r.headers().get("x-consent-accounts").unwrap(), "GB-1001");
    assert_eq!(r.headers().get("x-subject").unwrap(), "alice");
    assert!(r.headers().get(INTERACTION_ID).is_some());
    assert_eq!(r.content_length(), Some(0));

    let (status, _, iid, body) = answer(call("127.0.0.2").await.unwrap()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["Id"], iid.as_str());
    assert!(body["Message"].as_str().unwrap().contains("trusted proxies"), "{body}");
    assert_eq!(w.bank_requests(), 0, "forward-auth never calls the bank");
    let untrusted = r#"fapi_gateway_requests_total{api="",decision="untrusted_proxy",method="",route="",status="403"}"#;
    assert_eq!(w.metric(untrusted).await, 1.0);
    let allowed =
        r#"fapi_gateway_requests_total{api="gobank",decision="allowed",method="GET",route="/accounts",status="200"}"#;
    assert_eq!(w.metric(allowed).await, 1.0);
}

/// The README shows the snippets these tests run, character for character.
#[test]
fn the_readme_shows_the_tested_snippets_verbatim() {
    let readme = std::fs::read_to_string(repo_path("README.md")).unwrap();
    for (name, fence) in [("nginx.conf", "```nginx\n"), ("Caddyfile", "```caddyfile\n")] {
        let block = format!("{fence}{}```\n", snippet(name));
        assert!(
            readme.contains(&block),
            "README.md must show examples/forward-auth/{name} verbatim in a {} block",
            fence.trim()
        );
    }
}
