//! The configuration parsers, from text: `GatewayConfig::parse` (gateway.toml, with the
//! policy folder it names) and `PolicySet::parse_api` (one policy file).
//!
//! `GatewayConfig::parse` is given a path in `fuzz/target/config-fixture/`, a folder that
//! holds a development PKI under `certs/` and the repository's policies under `policies/`
//! (made on the first run), so the repository's own gateway.toml loads there in full.
#![no_main]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fapi_enforcement::config::GatewayConfig;
use fapi_devkit::pki::DevPki;
use fapi_enforcement::policy::PolicySet;
use fapi_gateway_fuzz::{repository, servers, upstreams};
use libfuzzer_sys::fuzz_target;

fn folder() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repository().join("fuzz/target/config-fixture");
        let pki = DevPki::at(&dir.join("certs"));
        if !pki.is_complete() {
            pki.generate().expect("a development PKI");
        }
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).expect("policies/");
        for file in ["gobank.toml", "hyperscalebank.toml"] {
            std::fs::copy(repository().join("policies").join(file), policies.join(file)).expect("a policy");
        }
        dir
    })
}

/// Whether loading would resolve a host name: upstreams are resolved at load, and a fuzzer
/// must not send DNS queries. Only IP literals are let through.
fn resolves_names(text: &str) -> bool {
    let Ok(toml::Value::Table(doc)) = text.parse::<toml::Value>() else { return false };
    let Some(toml::Value::Table(ups)) = doc.get("upstreams") else { return false };
    ups.values().any(|v| {
        let Some(url) = v.as_str() else { return false };
        let Ok(uri) = url.parse::<http::Uri>() else { return false };
        let Some(host) = uri.host() else { return false };
        host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_err()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = PolicySet::parse_api(Path::new("policies/fuzz.toml"), text, &upstreams(), &servers());
    if !resolves_names(text) {
        let path: PathBuf = folder().join("gateway.toml");
        let _ = GatewayConfig::parse(&path, text);
    }
});
