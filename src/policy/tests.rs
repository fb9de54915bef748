use std::collections::BTreeMap;
use std::path::Path;

use serde_json::json;

use super::*;

fn upstreams() -> BTreeMap<String, Upstream> {
    let mut u = BTreeMap::new();
    u.insert("gobank".to_string(), Upstream { name: "gobank".into(), address: "127.0.0.1:8070".parse().unwrap() });
    u
}

const UK: &str = r#"
[api]
prefix = "/gobank"
upstream = "gobank"
profile = "obuk"

[[route]]
path = "/accounts"
scopes = ["accounts"]
permissions_any = ["ReadAccountsBasic", "ReadAccountsDetail"]

[[route]]
path = "/accounts/{AccountId}/balances"
scopes = ["accounts"]
permissions = ["ReadBalances"]
account_param = "AccountId"

[[route]]
path = "/transactions"
scopes = ["accounts"]
permissions_any = [["ReadTransactionsBasic", "ReadTransactionsDetail"], ["ReadTransactionsCredits", "ReadTransactionsDebits"]]

[[route]]
methods = ["GET"]
path = "/open"
consent = false
binding = "none"
"#;

fn set(source: &str) -> PolicySet {
    PolicySet::new(vec![
        PolicySet::parse_api(Path::new("gobank.toml"), source, &upstreams(), &["as".to_string()]).unwrap()
    ])
}

fn token(claims: serde_json::Value) -> TokenInfo {
    TokenInfo::from_response(claims).unwrap()
}

fn uk_token() -> serde_json::Value {
    json!({
        "active": true, "exp": 2_000_000_000u64, "scope": "openid accounts", "client_id": "financroo", "sub": "alice",
        "cnf": {"x5t#S256": "THUMB"}, "ConsentId": "c1", "Status": "Authorised",
        "Permissions": ["ReadAccountsBasic", "ReadBalances"], "AccountIDs": ["A1", "A2"]
    })
}

fn decide(set: &PolicySet, method: &str, path: &str, claims: serde_json::Value) -> Result<Grant, Refusal> {
    let m = set.route(&method.parse().unwrap(), path, None)?;
    m.evaluate(&token(claims), Some("THUMB"), 1_000)
}

#[test]
fn allows_a_granted_request_and_fills_the_grant() {
    let g = decide(&set(UK), "GET", "/gobank/accounts/A1/balances", uk_token()).unwrap();
    assert_eq!(g.consent_id.as_deref(), Some("c1"));
    assert_eq!(g.subject.as_deref(), Some("alice"));
    assert_eq!(g.accounts, vec!["A1", "A2"]);
    assert_eq!(g.upstream_path, "/accounts/A1/balances");
    assert_eq!(g.scopes, "openid accounts");
}

#[test]
fn refusals_in_order() {
    let s = set(UK);
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut t = uk_token();
        f(&mut t);
        t
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("/gobank/accounts/A1/balances", json!({"active": false}), "invalid_token"),
        ("/gobank/accounts/A1/balances", with(&|t| t["exp"] = json!(999)), "invalid_token"),
        ("/gobank/accounts/A1/balances", with(&|t| t["cnf"]["x5t#S256"] = json!("OTHER")), "cert_mismatch"),
        (
            "/gobank/accounts/A1/balances",
            with(&|t| {
                t.as_object_mut().unwrap().remove("cnf");
            }),
            "cert_mismatch",
        ),
        ("/gobank/accounts/A1/balances", with(&|t| t["scope"] = json!("openid")), "insufficient_scope"),
        (
            "/gobank/accounts/A1/balances",
            with(&|t| {
                t.as_object_mut().unwrap().remove("ConsentId");
            }),
            "consent_missing",
        ),
        ("/gobank/accounts/A1/balances", with(&|t| t["Status"] = json!("Revoked")), "consent_status"),
        (
            "/gobank/accounts/A1/balances",
            with(&|t| t["ExpirationDateTime"] = json!("1970-01-01T00:00:10Z")),
            "consent_expired",
        ),
        (
            "/gobank/accounts/A1/balances",
            with(&|t| t["Permissions"] = json!(["ReadAccountsBasic"])),
            "permission_missing",
        ),
        ("/gobank/accounts", with(&|t| t["Permissions"] = json!(["ReadBalances"])), "permission_missing"),
        ("/gobank/accounts/A3/balances", uk_token(), "account_not_granted"),
        ("/gobank/nothing", uk_token(), "no_route"),
        ("/other/accounts", uk_token(), "no_route"),
        ("/gobank/accounts/../accounts", uk_token(), "invalid_request"),
        ("/gobank/accounts/A1%2F..%2FA3/balances", uk_token(), "invalid_request"),
        ("/gobank//accounts", uk_token(), "invalid_request"),
    ];
    for (path, claims, reason) in cases {
        let got = decide(&s, "GET", path, claims.clone()).unwrap_err();
        assert_eq!(got.reason(), reason, "{path} {claims}");
    }
    assert_eq!(decide(&s, "POST", "/gobank/accounts", uk_token()).unwrap_err(), Refusal::MethodNotAllowed);
    // An unexpired consent and an unbound, consent-free route pass.
    let later = with(&|t| t["ExpirationDateTime"] = json!("2100-01-01T00:00:00+00:00"));
    assert!(decide(&s, "GET", "/gobank/accounts/A2/balances", later).is_ok());
    assert!(decide(&s, "GET", "/gobank/open", json!({"active": true})).is_ok());
}

#[test]
fn permission_groups_each_need_one() {
    let s = set(UK);
    let with = |perms: serde_json::Value| {
        let mut t = uk_token();
        t["Permissions"] = perms;
        decide(&s, "GET", "/gobank/transactions", t)
    };
    assert!(with(json!(["ReadTransactionsBasic", "ReadTransactionsDebits"])).is_ok());
    assert!(with(json!(["ReadTransactionsDetail", "ReadTransactionsCredits"])).is_ok());
    assert_eq!(with(json!(["ReadTransactionsBasic"])).unwrap_err().reason(), "permission_missing");
    assert_eq!(with(json!(["ReadTransactionsCredits"])).unwrap_err().reason(), "permission_missing");
}

#[test]
fn claim_names_are_configurable() {
    let src = UK.replace(
        "profile = \"obuk\"",
        "profile = \"obuk\"\n[claims]\nconsent_id = \"intent.id\"\naccounts = \"intent.accounts[].id\"\nstatus = \"intent.state\"\ngranting_status = [\"ok\"]",
    );
    let claims = json!({
        "active": true, "scope": "accounts", "cnf": {"x5t#S256": "THUMB"}, "Permissions": ["ReadBalances"],
        "intent": {"id": "i1", "state": "ok", "accounts": [{"id": "A7"}]}
    });
    let g = decide(&set(&src), "GET", "/gobank/accounts/A7/balances", claims).unwrap();
    assert_eq!(g.consent_id.as_deref(), Some("i1"));
}

fn errors_of(source: &str) -> Vec<String> {
    match PolicySet::parse_api(Path::new("p.toml"), source, &upstreams(), &["as".to_string()]) {
        Ok(_) => vec![],
        Err(ConfigErrors(e)) => e.into_iter().map(|e| e.to_string()).collect(),
    }
}

use crate::config::ConfigErrors;

#[test]
fn every_kind_of_mistake_is_reported_with_file_and_line() {
    let cases: Vec<(String, &str)> = vec![
        (UK.replace("profile = \"obuk\"", "profile = \"obuk\"\ncolour = \"red\""), "p.toml:6: unknown field `colour`"),
        (UK.replace("profile = \"obuk\"", "profile = \"nz\""), "p.toml:5: unknown profile `nz`"),
        (UK.replace("upstream = \"gobank\"", "upstream = \"nobank\""), "p.toml:4: unknown upstream `nobank`"),
        (
            UK.replace("upstream = \"gobank\"", "upstream = \"gobank\"\nauthorization_server = \"other\""),
            "p.toml:5: unknown authorization server `other`",
        ),
        (UK.replace("prefix = \"/gobank\"", "prefix = \"gobank/\""), "p.toml:3: prefix `gobank/`"),
        (UK.replace("path = \"/open\"", "path = \"/open/{x\""), "p.toml:25: path `/open/{x`"),
        (
            UK.replace("path = \"/open\"", "path = \"/accounts\""),
            "p.toml:23: route `/accounts`: GET overlaps the route `/accounts` at line 7",
        ),
        (
            UK.replace("methods = [\"GET\"]", "methods = [\"get\"]"),
            "p.toml:23: route `/open`: `get` is not an HTTP method",
        ),
        (UK.replace("binding = \"none\"", "binding = \"dpop-ish\""), "p.toml:23: route `/open`: binding `dpop-ish`"),
        (
            UK.replace("account_param = \"AccountId\"", "account_param = \"Acct\""),
            "p.toml:12: route `/accounts/{AccountId}/balances`: account_param `Acct`",
        ),
        (
            UK.replace("scopes = [\"accounts\"]\npermissions = ", "scopes = [\"bad scope\"]\npermissions = "),
            "is not a valid scope token",
        ),
        ("[api]\nprefix = \"/x\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n".to_string(), "p.toml: no [[route]]"),
        ("[api\n".to_string(), "p.toml:1:"),
        (
            UK.replace("profile = \"obuk\"", "profile = \"obuk\"\n[claims]\nconsent_id = \"a..b\""),
            "p.toml:7: claim path `a..b`",
        ),
    ];
    for (source, expected) in cases {
        let errors = errors_of(&source);
        assert!(errors.iter().any(|e| e.contains(expected)), "expected `{expected}` in {errors:?}");
    }
    assert!(errors_of(UK).is_empty());
}
