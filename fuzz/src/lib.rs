//! What the fuzz targets share: the repository's own policies, loaded once, a fixed clock,
//! and an independent statement of the path normal form the router promises.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use fapi_enforcement::config::Upstream;
use fapi_enforcement::policy::PolicySet;
use http::Method;

/// The clock every target decides at (seconds since the epoch), so a crash reproduces.
pub const NOW: u64 = 1_800_000_000;

/// The gateway repository (the parent of `fuzz/`).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("fuzz/ has a parent").to_path_buf()
}

/// The upstreams and authorization server names the repository's `gateway.toml` defines.
pub fn upstreams() -> BTreeMap<String, Upstream> {
    [("gobank", "127.0.0.1:8070"), ("hyperscalebank", "127.0.0.1:7070")]
        .into_iter()
        .map(|(name, address)| {
            (name.to_string(), Upstream { name: name.to_string(), address: address.parse().expect("an address") })
        })
        .collect()
}

pub fn servers() -> Vec<String> {
    vec!["demo-as".to_string()]
}

/// The repository's `policies/` (Go Bank on the obuk profile, Hyperscale Bank generic).
pub fn policies() -> &'static PolicySet {
    static POLICIES: OnceLock<PolicySet> = OnceLock::new();
    POLICIES.get_or_init(|| {
        PolicySet::load_dir(&repository().join("policies"), &upstreams(), &servers())
            .unwrap_or_else(|e| panic!("the repository's policies do not load: {e}"))
    })
}

/// One request per route and method of [`policies`], parameters filled with `A1`.
pub fn sample_requests() -> &'static [(Method, String)] {
    static SAMPLES: OnceLock<Vec<(Method, String)>> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let mut samples = Vec::new();
        for api in policies().apis() {
            for route in &api.routes {
                let path: Vec<&str> =
                    route.path.split('/').map(|seg| if seg.starts_with('{') { "A1" } else { seg }).collect();
                for method in &route.methods {
                    samples.push((method.clone(), format!("{}{}", api.prefix, path.join("/"))));
                }
            }
        }
        samples
    })
}

/// The normal form of a path as README promises it, restated independently of the
/// gateway's code: absolute, no empty, `.` or `..` segment, no `\`, and no encoded `/`,
/// `\` or `.` (any case).
pub fn is_normal_form(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    if rest.is_empty() {
        return true;
    }
    let lower = rest.to_ascii_lowercase();
    !lower.contains("%2f")
        && !lower.contains("%2e")
        && !lower.contains("%5c")
        && !lower.contains("%3b")
        && !rest.contains(';')
        && !rest.contains('\\')
        && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}
