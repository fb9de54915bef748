//! Onboarding an authorization server of its own shape: consent elements switched off one
//! by one, API-level route defaults, catch-all routes and the warnings `check` gives.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::*;
use crate::diagnostics::ConfigErrors;

fn upstreams() -> BTreeMap<String, Upstream> {
    let mut u = BTreeMap::new();
    u.insert("bank".to_string(), Upstream { name: "bank".into(), address: "127.0.0.1:8070".parse().unwrap() });
    u
}

fn api(source: &str) -> Result<Api, Vec<String>> {
    PolicySet::parse_api(Path::new("p.toml"), source, &upstreams(), &["as".to_string()])
        .map_err(|ConfigErrors(e)| e.into_iter().map(|e| e.to_string()).collect())
}

fn set(source: &str) -> PolicySet {
    PolicySet::new(vec![api(source).unwrap()])
}

fn decide(set: &PolicySet, method: &str, path: &str, claims: serde_json::Value) -> Result<Grant, Refusal> {
    let m = set.route(&method.parse().unwrap(), path, None)?;
    m.evaluate(
        &TokenInfo::from_response(claims).unwrap(),
        Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None },
        1_000,
    )
}

/// What a standard server (oidc-provider, Keycloak) returns: a consent id, nothing else.
fn plain_token(consent: Option<&str>) -> serde_json::Value {
    let mut t = json!({
        "active": true, "exp": 2_000_000_000u64, "scope": "openid accounts", "client_id": "tpp",
        "cnf": {"x5t#S256": "THUMB"}
    });
    if let Some(c) = consent {
        t["consent_id"] = json!(c);
    }
    t
}

/// The generic profile with every consent element but the id switched off.
const ID_ONLY: &str = r#"
[api]
prefix = "/bank"
upstream = "bank"
profile = "generic"

[api.defaults]
scopes = ["accounts"]

[claims]
consent_type = false
status = false
expiration = false
accounts = false

[[route]]
path = "/accounts"

[[route]]
path = "/open"
consent = false
"#;

#[test]
fn a_server_that_names_only_the_consent_id_is_onboarded_with_the_generic_profile() {
    let s = set(ID_ONLY);
    let g = decide(&s, "GET", "/bank/accounts", plain_token(Some("c-1"))).unwrap();
    assert_eq!(g.consent_id.as_deref(), Some("c-1"));
    assert!(g.accounts.is_empty());
    // The consent id is still required: a token without it is refused, saying what is missing.
    let refused = decide(&s, "GET", "/bank/accounts", plain_token(None)).unwrap_err();
    assert_eq!(refused.reason(), "consent_missing");
    let summary = refused.summary();
    assert!(summary.contains("carries no consent") && summary.contains("`consent_id`"), "{summary}");
    // Defaults apply: a token without the scope is refused on both routes.
    let mut no_scope = plain_token(Some("c-1"));
    no_scope["scope"] = json!("openid");
    assert_eq!(decide(&s, "GET", "/bank/accounts", no_scope.clone()).unwrap_err().reason(), "insufficient_scope");
    assert_eq!(decide(&s, "GET", "/bank/open", no_scope).unwrap_err().reason(), "insufficient_scope");
    assert_eq!(decide(&s, "GET", "/bank/open", plain_token(None)).unwrap().consent_id, None);
    // `check` says which elements are checked.
    let described = s.apis()[0].claims.describe();
    for part in [
        "consent id `consent_id`",
        "kind not checked",
        "status not checked",
        "expiry not checked",
        "accounts not checked",
    ] {
        assert!(described.contains(part), "{part} in {described}");
    }
}

#[test]
fn the_generic_profile_as_shipped_refuses_a_missing_status_saying_it_is_missing() {
    let source = ID_ONLY.replace("status = false\n", "");
    let refused = decide(&set(&source), "GET", "/bank/accounts", plain_token(Some("c-1"))).unwrap_err();
    assert_eq!(refused.reason(), "consent_claim_missing");
    let summary = refused.summary();
    assert!(summary.contains("status is missing") && summary.contains("`status`"), "{summary}");
    assert!(!summary.contains("``"), "{summary}");
    let mut revoked = plain_token(Some("c-1"));
    revoked["status"] = json!("revoked");
    let refused = decide(&set(&source), "GET", "/bank/accounts", revoked).unwrap_err();
    assert_eq!(refused.reason(), "consent_status");
}

#[test]
fn explain_says_which_consent_elements_are_not_checked() {
    let s = set(ID_ONLY);
    let m = s.route(&Method::GET, "/bank/accounts", None).unwrap();
    let mut explanation = Explanation::default();
    m.run_checks(
        &TokenInfo::from_response(plain_token(Some("c-1"))).unwrap(),
        Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None },
        1_000,
        &mut explanation,
    )
    .unwrap();
    let detail = |check: Check| {
        explanation.checks.iter().find(|(c, _)| *c == check).map(|(_, r)| r.clone().unwrap()).unwrap_or_default()
    };
    assert!(detail(Check::ConsentStatus).starts_with("not checked"), "{explanation:?}");
    assert!(detail(Check::ConsentNotExpired).starts_with("not checked"), "{explanation:?}");
    assert_eq!(detail(Check::ConsentPresent), "consent_id = c-1");
}

#[test]
fn claim_switches_and_defaults_are_validated_with_lines() {
    let bad = ID_ONLY.replace("status = false", "status = true");
    let errors = api(&bad).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("p.toml:12: claims.status must be a claim path, or false")),
        "{errors:?}"
    );
    let bad = ID_ONLY
        .replace("[[route]]\npath = \"/accounts\"", "[[route]]\npath = \"/accounts/{Id}\"\naccount_param = \"Id\"");
    let errors = api(&bad).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("needs the consent's accounts, but claims.accounts is false")),
        "{errors:?}"
    );
    let bad =
        ID_ONLY.replace("[[route]]\npath = \"/accounts\"", "[[route]]\npath = \"/accounts\"\nconsent_status = [\"x\"]");
    let errors = api(&bad).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("claims.status is false")), "{errors:?}");
    let bad = ID_ONLY.replace("scopes = [\"accounts\"]", "scope = [\"accounts\"]");
    let errors = api(&bad).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("p.toml:8: unknown field `scope`")), "{errors:?}");
}

#[test]
fn a_route_overrides_the_api_defaults_and_public_routes_take_none() {
    let source = r#"
[api]
prefix = "/bank"
upstream = "bank"
profile = "generic"
[api.defaults]
scopes = ["accounts"]
binding = "mtls_or_dpop"
consent = false
client_ids = ["tpp"]
[[route]]
path = "/a"
[[route]]
path = "/b"
scopes = ["payments"]
client_ids = []
binding = "mtls"
[[route]]
path = "/c"
public = true
consent = false
"#;
    let a = api(source).unwrap();
    let (ra, rb, rc) = (&a.routes[0], &a.routes[1], &a.routes[2]);
    assert_eq!(
        (ra.scopes.clone(), ra.binding, ra.require_consent),
        (vec!["accounts".to_string()], Binding::MtlsOrDpop, false)
    );
    assert_eq!(ra.client_ids, vec!["tpp"]);
    assert_eq!(
        (rb.scopes.clone(), rb.binding, rb.client_ids.is_empty()),
        (vec!["payments".to_string()], Binding::Mtls, true)
    );
    assert!(rc.public && rc.scopes.is_empty() && rc.client_ids.is_empty());
}

const CATCH_ALL: &str = r#"
[api]
prefix = "/bank"
upstream = "bank"
profile = "generic"
[api.defaults]
consent = false
[[route]]
path = "/files"
[[route]]
path = "/files/{Path...}"
[[route]]
path = "/files/index"
methods = ["GET", "PUT"]
[[route]]
path = "/files/{Name}/meta"
"#;

#[test]
fn catch_all_routes_yield_to_literal_routes_and_cannot_be_escaped() {
    let s = set(CATCH_ALL);
    let route = |method: &str, path: &str| {
        s.route(&method.parse().unwrap(), path, None).map(|m| (m.route.path.clone(), m.params))
    };
    assert_eq!(route("GET", "/bank/files").unwrap().0, "/files");
    assert_eq!(route("GET", "/bank/files/index").unwrap().0, "/files/index");
    assert_eq!(route("GET", "/bank/files/x/meta").unwrap().0, "/files/{Name}/meta");
    let (template, params) = route("GET", "/bank/files/a/b/c.txt").unwrap();
    assert_eq!((template.as_str(), params), ("/files/{Path...}", vec![("Path".to_string(), "a/b/c.txt".to_string())]));
    assert_eq!(route("GET", "/bank/files/x/meta/more").unwrap().0, "/files/{Path...}");
    // PUT is served on the literal route only: elsewhere a 405 naming GET.
    assert_eq!(route("PUT", "/bank/files/index").unwrap().0, "/files/index");
    assert_eq!(route("PUT", "/bank/files/other").unwrap_err(), Refusal::MethodNotAllowed { allow: "GET".into() });
    // Nothing climbs out of the API or into another route through the catch-all.
    for tricky in [
        "/bank/files/../admin",
        "/bank/files/a/../../x",
        "/bank/files/%2e%2e/x",
        "/bank/files/a%2F..%2Fx",
        "/bank/files/a%2fb",
        "/bank/files/./a",
        "/bank/files//a",
        "/bank/files/a\\..\\b",
        "/bank/files/..;/x",
        "/bank/files/a%5c..",
    ] {
        let r = route("GET", tricky);
        assert!(matches!(r, Err(Refusal::InvalidRequest { field: "path", .. })), "{tricky}: {r:?}");
    }
    assert_eq!(route("GET", "/bank/other").unwrap_err(), Refusal::NoRoute { in_api: true });
    assert_eq!(route("GET", "/elsewhere/files/a").unwrap_err(), Refusal::NoRoute { in_api: false });
    // The catch-all forwards the path as it came.
    let m = s.route(&Method::GET, "/bank/files/a/b", Some("q=1")).unwrap();
    assert_eq!(m.upstream_path, "/files/a/b?q=1");
}

#[test]
fn glob_like_literals_are_warned_about_and_misplaced_catch_alls_refused() {
    let source = CATCH_ALL.replace("path = \"/files/{Name}/meta\"", "path = \"/files/*/meta\"");
    let a = api(&source).unwrap();
    let warnings: Vec<String> = a.warnings.iter().map(|w| w.to_string()).collect();
    assert!(
        warnings.iter().any(|w| w.starts_with("p.toml:16: route `/files/*/meta`: segment `*` is a literal")),
        "{warnings:?}"
    );
    for glob in ["/x/**", "/x/rest...", "/x/:id"] {
        let source = CATCH_ALL.replace("path = \"/files/{Name}/meta\"", &format!("path = \"{glob}\""));
        assert!(!api(&source).unwrap().warnings.is_empty(), "{glob}");
    }
    let source = CATCH_ALL.replace("path = \"/files/{Name}/meta\"", "path = \"/files/{Rest...}/meta\"");
    let errors = api(&source).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("must be the last segment")), "{errors:?}");
    let source = CATCH_ALL.replace("path = \"/files/{Name}/meta\"", "path = \"/files/{Other...}\"");
    let errors = api(&source).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("use one name")), "{errors:?}");
    assert!(api(CATCH_ALL).unwrap().warnings.is_empty());
}

#[test]
fn a_prefix_is_literal() {
    let errors = api(&CATCH_ALL.replace("prefix = \"/bank\"", "prefix = \"/bank/{Rest...}\"")).unwrap_err();
    assert!(
        errors.iter().any(|e| e.starts_with("p.toml:3: prefix `/bank/{Rest...}` is matched literally")),
        "{errors:?}"
    );
    let a = api(&CATCH_ALL.replace("prefix = \"/bank\"", "prefix = \"/bank/*\"")).unwrap();
    assert!(
        a.warnings.iter().any(|w| w.to_string().starts_with("p.toml:3: prefix `/bank/*`: segment `*`")),
        "{:?}",
        a.warnings
    );
}
