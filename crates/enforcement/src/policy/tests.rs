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
    m.evaluate(
        &token(claims),
        Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None },
        1_000,
    )
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
    assert_eq!(
        decide(&s, "POST", "/gobank/accounts", uk_token()).unwrap_err(),
        Refusal::MethodNotAllowed { allow: "GET".into() }
    );
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

use crate::diagnostics::ConfigErrors;

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
            "p.toml:23: route `/accounts`: GET overlaps the route `/accounts` at p.toml:7",
        ),
        (
            UK.replace("methods = [\"GET\"]", "methods = [\"get\"]"),
            "p.toml:23: route `/open`: `get` is not an HTTP method",
        ),
        (
            UK.replace("binding = \"none\"", "binding = \"dpop-ish\""),
            "p.toml:27: unknown variant `dpop-ish`, expected one of `mtls`, `dpop`, `mtls_or_dpop`, `none`",
        ),
        (
            UK.replace("account_param = \"AccountId\"", "account_param = \"Acct\""),
            "p.toml:12: route `/accounts/{AccountId}/balances`: account_param `Acct`",
        ),
        (
            UK.replace("scopes = [\"accounts\"]\npermissions = ", "scopes = [\"bad scope\"]\npermissions = "),
            "is not a valid scope token",
        ),
        ("[api]\nprefix = \"/x\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n".to_string(), "p.toml:2: no [[route]]"),
        ("[api\n".to_string(), "p.toml:1:"),
        (
            UK.replace("profile = \"obuk\"", "profile = \"obuk\"\n[claims]\nconsent_id = \"a..b\""),
            "p.toml:7: claim path `a..b`",
        ),
        (
            UK.replace("profile = \"obuk\"", "profile = \"obuk\"\n[claims]\nconsent_id = \"cnf.consent\""),
            "p.toml:7: claim path `cnf.consent` starts at the standard member `cnf`",
        ),
    ];
    for (source, expected) in cases {
        let errors = errors_of(&source);
        assert!(errors.iter().any(|e| e.contains(expected)), "expected `{expected}` in {errors:?}");
    }
    assert!(errors_of(UK).is_empty());
}

/// An API using a profile's built-in routes.
fn profile_set(profile: &str) -> PolicySet {
    let source =
        format!("[api]\nprefix = \"\"\nupstream = \"gobank\"\nprofile = \"{profile}\"\nprofile_routes = true\n");
    set(&source)
}

/// Decides `method path` for a token whose claims are `claims` plus binding and scopes.
fn decide_with(
    s: &PolicySet,
    method: &str,
    path: &str,
    claims: serde_json::Value,
    body: Option<&serde_json::Value>,
) -> Result<Grant, Refusal> {
    let m = s.route(&method.parse().unwrap(), path, None)?;
    let mut all = json!({"active": true, "exp": 2_000_000_000u64, "client_id": "tpp", "sub": "alice", "cnf": {"x5t#S256": "THUMB"}});
    for (k, v) in claims.as_object().unwrap() {
        all[k] = v.clone();
    }
    m.evaluate(&token(all), Presented { certificate_thumbprint: Some("THUMB"), body, dpop_thumbprint: None }, 1_000)
}

fn outcome(r: Result<Grant, Refusal>) -> &'static str {
    match r {
        Ok(_) => "allow",
        Err(e) => e.reason(),
    }
}

#[test]
fn obuk_profile_table() {
    let s = profile_set("obuk");
    // As a UK server answers: ConsentId, Status, Permissions, AccountIDs at the top level.
    let uk = |perms: &[&str]| json!({"scope": "openid accounts", "ConsentId": "urn-alphabank-intent-88379", "ConsentType": "account-access-consent", "Status": "Authorised", "Permissions": perms, "AccountIDs": ["22289"]});
    let table: Vec<(&str, &[&str], &str)> = vec![
        ("/accounts", &["ReadAccountsBasic"], "allow"),
        ("/accounts", &["ReadAccountsDetail"], "allow"),
        ("/accounts", &["ReadBalances"], "permission_missing"),
        ("/accounts/22289", &["ReadAccountsDetail"], "allow"),
        ("/accounts/31820", &["ReadAccountsDetail"], "account_not_granted"),
        ("/balances", &["ReadBalances"], "allow"),
        ("/accounts/22289/balances", &["ReadAccountsBasic"], "permission_missing"),
        ("/transactions", &["ReadTransactionsBasic", "ReadTransactionsCredits"], "allow"),
        ("/transactions", &["ReadTransactionsDetail", "ReadTransactionsDebits"], "allow"),
        ("/transactions", &["ReadTransactionsBasic"], "permission_missing"),
        ("/transactions", &["ReadTransactionsCredits", "ReadTransactionsDebits"], "permission_missing"),
        ("/accounts/22289/transactions", &["ReadTransactionsDetail", "ReadTransactionsCredits"], "allow"),
        ("/beneficiaries", &["ReadBeneficiariesBasic"], "allow"),
        ("/accounts/22289/beneficiaries", &["ReadBalances"], "permission_missing"),
        ("/direct-debits", &["ReadDirectDebits"], "allow"),
        ("/accounts/22289/standing-orders", &["ReadStandingOrdersDetail"], "allow"),
        ("/products", &["ReadProducts"], "allow"),
        ("/accounts/22289/product", &["ReadProducts"], "allow"),
        ("/offers", &["ReadOffers"], "allow"),
        ("/party", &["ReadParty"], "permission_missing"),
        ("/party", &["ReadPartyPSU"], "allow"),
        ("/accounts/22289/party", &["ReadParty"], "allow"),
        ("/scheduled-payments", &["ReadScheduledPaymentsBasic"], "allow"),
        ("/statements", &["ReadStatementsBasic"], "allow"),
        ("/accounts/22289/statements/S1/file", &["ReadStatementsBasic"], "permission_missing"),
        ("/accounts/22289/statements/S1/file", &["ReadStatementsDetail"], "allow"),
        (
            "/accounts/22289/statements/S1/transactions",
            &["ReadStatementsBasic", "ReadTransactionsBasic", "ReadTransactionsDebits"],
            "allow",
        ),
        ("/accounts/22289/statements/S1/transactions", &["ReadStatementsBasic"], "permission_missing"),
        ("/nonsense", &["ReadAccountsBasic"], "no_route"),
    ];
    for (path, perms, expected) in table {
        assert_eq!(outcome(decide_with(&s, "GET", path, uk(perms), None)), expected, "GET {path} with {perms:?}");
    }
    let mut revoked = uk(&["ReadAccountsBasic"]);
    revoked["Status"] = json!("Revoked");
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", revoked, None)), "consent_status");
}

#[test]
fn obuk_payments_need_the_tokens_consent_in_the_body() {
    let s = profile_set("obuk");
    let payment = |status: &str| json!({"scope": "openid payments", "ConsentId": "pc-1", "ConsentType": "domestic-payment-consent", "Status": status});
    let body = |id: &str| json!({"Data": {"ConsentId": id, "Initiation": {"InstructedAmount": {"Amount": "10.00", "Currency": "GBP"}}}, "Risk": {}});
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", payment("Authorised"), Some(&body("pc-1")))),
        "allow"
    );
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", payment("Authorised"), Some(&body("pc-2")))),
        "consent_mismatch"
    );
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", payment("Consumed"), Some(&body("pc-1")))),
        "consent_status"
    );
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", payment("Authorised"), Some(&json!({"Data": {}})))),
        "invalid_request"
    );
    let mut accounts_only = payment("Authorised");
    accounts_only["scope"] = json!("openid accounts");
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", accounts_only, Some(&body("pc-1")))),
        "insufficient_scope"
    );
    assert_eq!(outcome(decide_with(&s, "GET", "/domestic-payments/P1", payment("Consumed"), None)), "allow");
    // An account-access consent never pays, whatever scopes its token was given.
    let mut ais = payment("Authorised");
    ais["ConsentType"] = json!("account-access-consent");
    ais["Permissions"] = json!(["ReadAccountsBasic"]);
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", ais.clone(), Some(&body("pc-1")))),
        "consent_kind"
    );
    ais.as_object_mut().unwrap().remove("ConsentType");
    assert_eq!(outcome(decide_with(&s, "POST", "/domestic-payments", ais, Some(&body("pc-1")))), "consent_kind");
    // Nor does a payment consent of another kind, or a payment consent read accounts.
    let mut scheduled = payment("Authorised");
    scheduled["ConsentType"] = json!("domestic-scheduled-payment-consent");
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-payments", scheduled.clone(), Some(&body("pc-1")))),
        "consent_kind"
    );
    assert_eq!(
        outcome(decide_with(&s, "POST", "/domestic-scheduled-payments", scheduled, Some(&body("pc-1")))),
        "allow"
    );
    let mut reads = payment("Authorised");
    reads["scope"] = json!("openid accounts payments");
    reads["Permissions"] = json!(["ReadAccountsBasic"]);
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", reads, None)), "consent_kind");
    // Every obuk route names its kinds.
    assert!(s.apis()[0].routes.iter().all(|r| !r.consent_types.is_empty()));
    assert_eq!(
        s.apis()[0].routes.iter().find(|r| r.path == "/domestic-payments").unwrap().cache_ttl,
        Some(std::time::Duration::from_secs(5))
    );
}

#[test]
fn obbr_profile_table() {
    let s = profile_set("obbr");
    let br = |perms: &[&str], status: &str| json!({"scope": "openid accounts consent:urn:bank:1", "consentId": "urn:bank:1", "consentType": "data-sharing-consent", "status": status, "permissions": perms, "AccountIDs": ["acc-1"]});
    assert_eq!(
        outcome(decide_with(&s, "GET", "/accounts/v2/accounts", br(&["ACCOUNTS_READ"], "AUTHORISED"), None)),
        "allow"
    );
    assert_eq!(
        outcome(decide_with(
            &s,
            "GET",
            "/accounts/v2/accounts/acc-1/balances",
            br(&["ACCOUNTS_READ"], "AUTHORISED"),
            None
        )),
        "permission_missing"
    );
    assert_eq!(
        outcome(decide_with(
            &s,
            "GET",
            "/accounts/v2/accounts/acc-1/balances",
            br(&["ACCOUNTS_BALANCES_READ"], "AUTHORISED"),
            None
        )),
        "allow"
    );
    assert_eq!(
        outcome(decide_with(
            &s,
            "GET",
            "/accounts/v2/accounts/acc-2/transactions",
            br(&["ACCOUNTS_TRANSACTIONS_READ"], "AUTHORISED"),
            None
        )),
        "account_not_granted"
    );
    assert_eq!(
        outcome(decide_with(
            &s,
            "GET",
            "/accounts/v2/accounts",
            br(&["ACCOUNTS_READ"], "AWAITING_AUTHORISATION"),
            None
        )),
        "consent_status"
    );
    let mut pay = br(&[], "AUTHORISED");
    pay["scope"] = json!("openid payments");
    assert_eq!(
        outcome(decide_with(&s, "POST", "/payments/v1/pix/payments", pay.clone(), Some(&json!({})))),
        "consent_kind",
        "a data-sharing consent does not pay"
    );
    pay["consentType"] = json!("payment-consent");
    assert_eq!(outcome(decide_with(&s, "POST", "/payments/v1/pix/payments", pay, Some(&json!({})))), "allow");
}

#[test]
fn cdr_profile_table() {
    let s = profile_set("cdr");
    let au = |scope: &str| json!({"scope": scope, "cdr_arrangement_id": "arr-1", "AccountIDs": ["a1"]});
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/accounts", au("bank:accounts.basic:read"), None)), "allow");
    assert_eq!(
        outcome(decide_with(&s, "GET", "/banking/accounts/balances", au("bank:accounts.basic:read"), None)),
        "allow"
    );
    assert_eq!(
        outcome(decide_with(&s, "GET", "/banking/accounts/a1", au("bank:accounts.basic:read"), None)),
        "insufficient_scope"
    );
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/accounts/a1", au("bank:accounts.detail:read"), None)), "allow");
    assert_eq!(
        outcome(decide_with(&s, "GET", "/banking/accounts/a2/transactions", au("bank:transactions:read"), None)),
        "account_not_granted"
    );
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/payees", au("bank:payees:read"), None)), "allow");
    // No arrangement, no access.
    assert_eq!(
        outcome(decide_with(&s, "GET", "/banking/accounts", json!({"scope": "bank:accounts.basic:read"}), None)),
        "consent_missing"
    );
}

#[test]
fn fdx_profile_table() {
    let s = profile_set("fdx");
    let us = |scope: &str, status: &str| json!({"scope": scope, "fdx_consent": {"id": "c-9", "status": status, "resources": [{"resourceType": "ACCOUNT", "id": "acct-1"}, {"resourceType": "ACCOUNT", "id": "acct-2"}]}});
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", us("fdx:accountbasic:read", "ACTIVE"), None)), "allow");
    assert_eq!(
        outcome(decide_with(&s, "GET", "/accounts/acct-2", us("fdx:accountdetailed:read", "ACTIVE"), None)),
        "allow"
    );
    assert_eq!(
        outcome(decide_with(&s, "GET", "/accounts/acct-3", us("fdx:accountdetailed:read", "ACTIVE"), None)),
        "account_not_granted"
    );
    assert_eq!(
        outcome(decide_with(
            &s,
            "GET",
            "/accounts/acct-1/transactions",
            us("fdx:accountdetailed:read", "ACTIVE"),
            None
        )),
        "insufficient_scope"
    );
    assert_eq!(
        outcome(decide_with(&s, "GET", "/accounts/acct-1/transactions", us("fdx:transactions:read", "REVOKED"), None)),
        "consent_status"
    );
}

#[test]
fn generic_profile_table() {
    let s = profile_set("generic");
    let g = |status: &str| json!({"scope": "accounts", "consent_id": "c-1", "status": status, "account_ids": ["x1"]});
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/accounts", g("authorized"), None)), "allow");
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/accounts/x1/balance", g("authorized"), None)), "allow");
    assert_eq!(
        outcome(decide_with(&s, "GET", "/banking/accounts/x2/balance", g("authorized"), None)),
        "account_not_granted"
    );
    assert_eq!(outcome(decide_with(&s, "GET", "/banking/accounts", g("revoked"), None)), "consent_status");
}

#[test]
fn files_override_and_remove_profile_routes() {
    let source = "[api]\nprefix = \"\"\nupstream = \"gobank\"\nprofile = \"obuk\"\nprofile_routes = true\n\n[[route]]\npath = \"/accounts\"\nscopes = [\"accounts\"]\npermissions = [\"ReadAccountsDetail\"]\nclient_ids = [\"tpp\"]\nacr_values = [\"urn:openbanking:psd2:sca\"]\n\n[[route]]\npath = \"/offers\"\nenabled = false\n";
    let s = set(source);
    let uk = json!({"scope": "accounts", "ConsentId": "c", "ConsentType": "account-access-consent", "Status": "Authorised", "Permissions": ["ReadAccountsBasic", "ReadAccountsDetail", "ReadOffers"], "AccountIDs": [], "acr": "urn:openbanking:psd2:sca"});
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", uk.clone(), None)), "allow");
    let mut weak = uk.clone();
    weak["acr"] = json!("urn:openbanking:psd2:ca");
    let refusal = decide_with(&s, "GET", "/accounts", weak, None).unwrap_err();
    assert_eq!(refusal.reason(), "insufficient_acr");
    assert_eq!(refusal.status(), 401);
    let mut other = uk.clone();
    other["client_id"] = json!("someone");
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", other, None)), "client_not_allowed");
    assert_eq!(outcome(decide_with(&s, "GET", "/offers", uk.clone(), None)), "no_route");
    assert_eq!(outcome(decide_with(&s, "GET", "/products", uk.clone(), None)), "permission_missing");
    // The override keeps the profile route's consent kind.
    let mut payment = uk;
    payment["ConsentType"] = json!("domestic-payment-consent");
    assert_eq!(outcome(decide_with(&s, "GET", "/accounts", payment, None)), "consent_kind");
}

#[test]
fn audiences_bind_a_token_to_its_api() {
    let s = set(&UK.replace("[api]\n", "[api]\naudiences = [\"https://api.gobank.example\"]\n"));
    let mut t = uk_token();
    assert_eq!(outcome(decide(&s, "GET", "/gobank/accounts", t.clone())), "invalid_token", "no aud");
    t["aud"] = json!("https://api.otherbank.example");
    let refusal = decide(&s, "GET", "/gobank/accounts", t.clone()).unwrap_err();
    assert_eq!((refusal.reason(), refusal.status()), ("invalid_token", 401));
    t["aud"] = json!(["https://api.otherbank.example", "https://api.gobank.example"]);
    assert_eq!(outcome(decide(&s, "GET", "/gobank/accounts", t.clone())), "allow");
    // Without audiences the API takes any aud (check warns when that matters).
    t["aud"] = json!("https://api.otherbank.example");
    assert_eq!(outcome(decide(&set(UK), "GET", "/gobank/accounts", t)), "allow");
}

#[test]
fn path_parameters_are_refused_unless_the_route_takes_them() {
    let s = set(UK);
    // A literal segment with parameters matches no route.
    for path in ["/gobank/accounts;x=1", "/gobank/accounts/A1/balances;"] {
        assert!(matches!(s.route(&Method::GET, path, None), Err(Refusal::NoRoute { .. })), "{path}");
    }
    for path in ["/gobank/accounts/A1;v=2/balances", "/gobank/accounts/..;/accounts/A1/balances"] {
        let r = s.route(&Method::GET, path, None).map(|m| m.route.path.clone());
        assert!(matches!(r, Err(Refusal::InvalidRequest { field: "path", .. })), "{path}: {r:?}");
    }
    for path in ["/gobank/accounts/A1%3B/balances", "/gobank/accounts/A1%3b/balances", "/gobank/..;/x", "/gobank/;/x"] {
        let r = s.route(&Method::GET, path, None).map(|m| m.route.path.clone());
        assert!(
            matches!(r, Err(Refusal::InvalidRequest { description: "the request path is not in normal form", .. })),
            "{path}: {r:?}"
        );
    }
    let allowing =
        set(&UK.replace("account_param = \"AccountId\"", "account_param = \"AccountId\"\npath_parameters = true"));
    let m = allowing.route(&Method::GET, "/gobank/accounts/A1;v=2/balances", None).unwrap();
    assert_eq!(m.upstream_path, "/accounts/A1;v=2/balances");
    // The account is what the bank's router reads: the segment before `;`.
    assert_eq!(
        outcome(m.evaluate(
            &token(uk_token()),
            Presented { certificate_thumbprint: Some("THUMB"), ..Default::default() },
            1_000
        )),
        "allow"
    );
    assert!(allowing.route(&Method::GET, "/gobank/accounts/..;v=2/balances", None).is_err(), "dot segments still");
}

#[test]
fn accounts_compare_as_the_bank_decodes_them() {
    let s = set(UK);
    let mut t = uk_token();
    t["AccountIDs"] = json!(["A1", "GB-1001", "ä"]);
    for (path, expected) in [
        ("/gobank/accounts/%41%31/balances", "allow"),
        ("/gobank/accounts/GB%2D1001/balances", "allow"),
        ("/gobank/accounts/%C3%A4/balances", "allow"),
        ("/gobank/accounts/%C3/balances", "no_route"),
        ("/gobank/accounts/%2541/balances", "account_not_granted"),
        ("/gobank/accounts/A2/balances", "account_not_granted"),
        ("/gobank/accounts/A%32/balances", "account_not_granted"),
    ] {
        assert_eq!(outcome(decide(&s, "GET", path, t.clone())), expected, "{path}");
    }
}

#[test]
fn consent_kinds_are_checked_against_the_profile_and_need_a_claim() {
    let with = |kinds: &str| {
        UK.replace(
            "permissions = [\"ReadBalances\"]",
            &format!("permissions = [\"ReadBalances\"]\nconsent_types = {kinds}"),
        )
    };
    assert!(errors_of(&with("[\"account-access\"]"))
        .iter()
        .any(|e| e.contains("unknown consent kind `account-access`")));
    let cdr = "[api]\nprefix = \"\"\nupstream = \"gobank\"\nprofile = \"cdr\"\n[[route]]\npath = \"/x\"\nconsent_types = [\"k\"]\n";
    assert!(errors_of(cdr).iter().any(|e| e.contains("has no consent kind claim")), "{:?}", errors_of(cdr));
    let named = cdr.replace("[[route]]", "[claims]\nconsent_type = \"arrangement_kind\"\n[[route]]");
    assert!(errors_of(&named).is_empty(), "{:?}", errors_of(&named));
}

#[test]
fn unknown_permissions_are_reported() {
    let errors = errors_of(&UK.replace("permissions = [\"ReadBalances\"]", "permissions = [\"ReadBalance\"]"));
    assert!(
        errors.iter().any(|e| e.contains(
            "p.toml:12: route `/accounts/{AccountId}/balances`: unknown permission `ReadBalance` for profile obuk"
        )),
        "{errors:?}"
    );
}

#[test]
fn explain_records_every_check() {
    let s = set(UK);
    let m = s.route(&"GET".parse().unwrap(), "/gobank/accounts/A3/balances", None).unwrap();
    let mut claims = uk_token();
    claims["scope"] = json!("openid");
    let mut explanation = Explanation::default();
    let result = m.run_checks(
        &token(claims),
        Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None },
        1_000,
        &mut explanation,
    );
    assert_eq!(result.unwrap_err().reason(), "insufficient_scope", "the first failure decides");
    let failed: Vec<Check> = explanation.checks.iter().filter(|(_, r)| r.is_err()).map(|(c, _)| *c).collect();
    assert_eq!(failed, vec![Check::Scopes, Check::Account]);
    assert!(explanation.checks.iter().any(|(c, r)| *c == Check::Binding && r.as_ref().unwrap().contains("THUMB")));
}

#[test]
fn an_account_granted_with_spaces_is_one_account() {
    // Found by tests/properties.rs: `AccountIDs: ["GB29 NWBK"]` granted `GB29` and `NWBK`
    // (and refused the account the consent named).
    let s = set(UK);
    let mut claims = uk_token();
    claims["AccountIDs"] = json!(["GB29 NWBK"]);
    for path in ["/gobank/accounts/GB29/balances", "/gobank/accounts/NWBK/balances"] {
        assert!(
            matches!(
                decide(&s, "GET", path, claims.clone()),
                Err(Refusal::Consent(ConsentRefusal::AccountNotGranted { .. }))
            ),
            "{path}"
        );
    }
    let g = decide(&s, "GET", "/gobank/accounts/GB29%20NWBK/balances", claims).unwrap();
    assert_eq!(g.accounts, vec!["GB29 NWBK"]);
}

#[test]
fn path_forms() {
    use PathForm::*;
    for (path, form) in [
        ("/", Normal),
        ("/a", Normal),
        ("/a/b.c/..d/%41", Normal),
        ("a", NotNormal),
        ("", NotNormal),
        ("//", NotNormal),
        ("/a/", NotNormal),
        ("/a//b", NotNormal),
        ("/./a", NotNormal),
        ("/a/..", NotNormal),
        ("/a/..;/b", NotNormal),
        ("/a/;x", NotNormal),
        ("/a\\b", NotNormal),
        ("/a%2fb", NotNormal),
        ("/a%2Eb", NotNormal),
        ("/a%5Cb", NotNormal),
        ("/a%3bb", NotNormal),
        ("/a%2", Normal),
        ("/a;v=1/b", WithParameters),
        ("/a/b;", WithParameters),
    ] {
        assert_eq!(path_form(path), form, "{path:?}");
    }
}

#[test]
fn limit_sections_compile_and_their_mistakes_have_lines() {
    let good = format!(
        "{UK}\n[[rate_limit]]\nname = \"per-tpp\"\nkey = [\"client_id\"]\nrate = 10\nburst = 20\n\n[[quota]]\nkey = [\"consent\", \"route\"]\nlimit = 1000\nper = \"day\"\nroutes = [\"/accounts\"]\n\n[unattended_access]\nmax_requests = 2\n"
    );
    let api = PolicySet::parse_api(Path::new("p.toml"), &good, &upstreams(), &["as".to_string()]).unwrap();
    assert_eq!(api.limits.len(), 2);
    assert_eq!(api.limits[0].name, "per-tpp");
    assert_eq!(api.limits[1].name, "quota-1");
    assert_eq!(api.limits[1].algorithm, crate::traffic::Algorithm::FixedWindow { limit: 1000, window: 86_400 });
    let unattended = api.unattended_access.unwrap();
    assert_eq!((unattended.max_requests, unattended.window.as_secs()), (2, 86_400));
    assert_eq!(unattended.consent_types, vec!["account-access-consent"]);

    let cases: Vec<(String, &str)> = vec![
        (format!("{UK}\n[[rate_limit]]\nrate = 0\n"), "p.toml:29: [[rate_limit]] `rate-1`: rate must be at least 1"),
        (
            format!("{UK}\n[[rate_limit]]\nrate = 5\nper = \"week\"\n"),
            "p.toml:29: [[rate_limit]] `rate-1`: per = \"week\"",
        ),
        (
            format!("{UK}\n[[quota]]\nlimit = 5\nper = \"day\"\nkey = [\"ip\"]\n"),
            "p.toml:29: [[quota]] `quota-1`: key `ip` is not one of",
        ),
        (
            format!("{UK}\n[[quota]]\nlimit = 5\nper = \"day\"\nroutes = [\"/nope\"]\n"),
            "p.toml:29: [[quota]] `quota-1`: routes: `/nope` is not a route",
        ),
        (
            format!(
                "{UK}\n[[quota]]\nname = \"a\"\nlimit = 5\nper = \"day\"\n[[rate_limit]]\nname = \"a\"\nrate = 1\n"
            ),
            "`a`: the name is used twice",
        ),
        (format!("{UK}\n[[quota]]\nlimit = 5\n"), "missing field `per`"),
        (format!("{UK}\n[unattended_access]\nmax_requests = 0\n"), "p.toml:29: [unattended_access] max_requests"),
        (
            format!("{}\n[unattended_access]\n", UK.replace("profile = \"obuk\"", "profile = \"cdr\"")),
            "profile cdr has no unattended-access rule",
        ),
    ];
    for (source, expected) in cases {
        let errors = errors_of(&source);
        assert!(errors.iter().any(|e| e.contains(expected)), "expected {expected:?} in {errors:?}");
    }
}
