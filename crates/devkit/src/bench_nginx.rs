//! The nginx baseline for the benchmark: Debian's nginx with the njs module, running the
//! `auth_request` introspection pattern from `benches/nginx/` against the same mock
//! authorization server and bank.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::pki::DevPki;

/// A running nginx; stopped when dropped.
pub struct Nginx {
    pub addr: SocketAddr,
    child: Child,
}

impl Nginx {
    /// The master's process id (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// Stops a server process: SIGTERM (to nginx's master it stops the workers too, which
/// SIGKILL would orphan), and SIGKILL if it is still running 5 s later.
pub fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..50 {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Which nginx the benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setup {
    /// `nginx.conf.template`: auth_request, the njs introspection handler, proxy_cache.
    AuthRequest,
    /// `plain.conf.template`: the same mutual-TLS listener and upstream, no authorization.
    Plain,
}

/// Starts nginx from the template in `benches/nginx/` (next to the working directory or
/// the crate), or says why it cannot.
pub async fn start(
    setup: Setup,
    pki: &DevPki,
    bank: SocketAddr,
    authorization_server: SocketAddr,
    work: &Path,
) -> Result<Nginx, String> {
    let template_name = match setup {
        Setup::AuthRequest => "nginx.conf.template",
        Setup::Plain => "plain.conf.template",
    };
    let root = [std::env::current_dir().unwrap_or_default(), Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")]
        .into_iter()
        .find(|d| d.join("benches/nginx/nginx.conf.template").is_file())
        .ok_or("benches/nginx/nginx.conf.template not found (run from the repository)")?;
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("nginx is not installed: `apt-get install nginx libnginx-mod-http-js` (the benchmark's setup)")?;
    let template =
        std::fs::read_to_string(root.join("benches/nginx").join(template_name)).map_err(|e| e.to_string())?;
    let njs = ["introspect.js", "introspect.mjs"]
        .iter()
        .map(|f| root.join("benches/nginx").join(f))
        .find(|p| p.is_file())
        .ok_or("the njs handler is missing from benches/nginx/")?;
    let dir = work.join(match setup {
        Setup::AuthRequest => "nginx",
        Setup::Plain => "nginx-plain",
    });
    std::fs::create_dir_all(dir.join("cache")).map_err(|e| e.to_string())?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?;
    let conf = template
        .replace("{DIR}", &dir.display().to_string())
        .replace("{NJS}", &njs.display().to_string())
        .replace("{LISTEN}", &addr.to_string())
        .replace("{CERT}", &pki.server_cert().display().to_string())
        .replace("{KEY}", &pki.server_key().display().to_string())
        .replace("{CA}", &pki.ca().display().to_string())
        .replace("{BANK}", &bank.to_string())
        .replace("{AS_URL}", &format!("https://{authorization_server}/introspect"))
        .replace("{AS_CA}", &pki.ca().display().to_string())
        .replace("{BASIC}", &STANDARD.encode("fapi-gateway:bench-secret"));
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf_path)
        .arg("-p")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nginx: {e}"))?;
    let started = Nginx { addr, child };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(started);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nginx did not listen on {addr}; see {}", dir.join("error.log").display()))
}
