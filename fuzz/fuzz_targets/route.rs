//! The path normaliser and route matcher (`PolicySet::route`) on the repository's own
//! policies, and the checks of whatever route matches, on a fixed token.
//!
//! Input: `METHOD\npath?query` (no newline: the whole input is the target, method GET).
#![no_main]

use std::sync::OnceLock;

use fapi_enforcement::introspection::TokenInfo;
use fapi_enforcement::policy::Presented;
use fapi_gateway_fuzz::{is_normal_form, policies, NOW};
use http::Method;
use libfuzzer_sys::fuzz_target;

fn token() -> &'static TokenInfo {
    static TOKEN: OnceLock<TokenInfo> = OnceLock::new();
    TOKEN.get_or_init(|| {
        TokenInfo::from_response(serde_json::json!({
            "active": true, "exp": NOW + 60, "scope": "openid accounts payments", "client_id": "c", "sub": "alice",
            "cnf": {"x5t#S256": "THUMB"}, "ConsentId": "c1", "Status": "Authorised", "consent_id": "c1",
            "status": "authorized", "Permissions": ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail"],
            "AccountIDs": ["A1", "A 2", "GB-1001"], "account_ids": ["A1", "A 2", "GB-1001"]
        }))
        .expect("a valid response")
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (method, target) = match text.split_once('\n') {
        Some((m, t)) => (Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET), t),
        None => (Method::GET, &*text),
    };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    let Ok(matched) = policies().route(&method, path, query) else { return };
    assert!(is_normal_form(path), "accepted a path not in normal form: {path:?}");
    // The upstream path is the request's, less the API's prefix, with the query.
    let rest = path.strip_prefix(&matched.api.prefix).expect("the prefix matched");
    let expected = if rest.is_empty() { "/" } else { rest };
    let forwarded = matched.upstream_path.split_once('?').map_or(&*matched.upstream_path, |(p, _)| p);
    assert_eq!(forwarded, expected);
    assert_eq!(matched.upstream_path.split_once('?').map(|(_, q)| q), query);
    assert!(matched.route.methods.contains(&method));
    if let Some(param) = &matched.route.account_param {
        assert!(matched.params.iter().any(|(name, _)| name == param), "no {param} in {:?}", matched.params);
    }
    let presented = Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None };
    if let Ok(grant) = matched.evaluate(token(), presented, NOW) {
        assert_eq!(grant.upstream_path, matched.upstream_path);
    }
});
