//! Properties of the parsers that see attacker bytes (issue 11), on generated input:
//! strict JSON against serde_json, the path normal form of the router, and a differential
//! with a standard router on the bank's side: the account the gateway authorises is the
//! account the bank reads from the path the gateway forwards.
//!
//! The fuzz targets in `fuzz/` look for crashes in the same code; these run in `cargo test`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use axum::body::Body;
use axum::extract::Path as PathParam;
use axum::routing::get;
use fapi_enforcement::config::Upstream;
use fapi_enforcement::introspection::TokenInfo;
use fapi_enforcement::policy::{PolicySet, Presented};
use fapi_enforcement::strict_json::{self, StrictJsonError};
use http::{Method, Request, StatusCode};
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

const NOW: u64 = 1_800_000_000;

// ---- strict JSON -------------------------------------------------------------------

/// Member names: mostly short and colliding-prone, sometimes anything.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-cA\u{e9}\"\\\\/ ]{0,3}", 1 => any::<String>()]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f).map(Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((name(), inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(m) => m.values().any(has_float),
        _ => false,
    }
}

fn objects(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.iter().map(objects).sum(),
        Value::Object(m) => 1 + m.values().map(objects).sum::<usize>(),
        _ => 0,
    }
}

/// Where to insert a duplicate member: which object (pre-order), which of its names (or a
/// new one named twice, in an empty object), where among its members, spelled how.
#[derive(Debug, Clone)]
struct Duplicate {
    object: usize,
    member: usize,
    position: usize,
    escaped: bool,
    value: Value,
}

/// A name spelled entirely with `\u` escapes: the same name to every JSON parser.
fn escaped(name: &str) -> String {
    let mut out = String::from("\"");
    for unit in name.encode_utf16() {
        out.push_str(&format!("\\u{unit:04x}"));
    }
    out.push('"');
    out
}

/// Serialises `v` as serde_json would, with one member named twice in object `dup.object`.
fn write_with_duplicate(v: &Value, dup: &Duplicate, seen: &mut usize) -> String {
    match v {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|i| write_with_duplicate(i, dup, seen)).collect();
            format!("[{}]", items.join(","))
        }
        Value::Object(m) => {
            let me = *seen;
            *seen += 1;
            let mut members: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), write_with_duplicate(v, dup, seen)))
                .collect();
            if me == dup.object {
                let name = m.keys().nth(dup.member % m.len().max(1)).cloned().unwrap_or_else(|| "x".into());
                let key = if dup.escaped { escaped(&name) } else { serde_json::to_string(&name).unwrap() };
                if m.is_empty() {
                    members.push(format!("{}:null", serde_json::to_string(&name).unwrap()));
                }
                let at = dup.position % (members.len() + 1);
                members.insert(at, format!("{key}:{}", dup.value));
            }
            format!("{{{}}}", members.join(","))
        }
        other => other.to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Without duplicate members, the strict parser reads what serde_json reads.
    #[test]
    fn strict_json_agrees_with_serde_json(v in json_value(), pretty in any::<bool>()) {
        let text = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        let strict = strict_json::parse(text.as_bytes());
        prop_assert_eq!(&strict, &Ok(serde_json::from_str::<Value>(&text).unwrap()));
        if !has_float(&v) {
            prop_assert_eq!(strict, Ok(v));
        }
    }

    /// A member named twice, at any depth, in any spelling, is refused.
    #[test]
    fn strict_json_refuses_every_duplicate(
        v in json_value(),
        object in any::<usize>(),
        member in any::<usize>(),
        position in any::<usize>(),
        escaped in any::<bool>(),
        value in json_value(),
    ) {
        let v = if objects(&v) == 0 { json!({ "w": v }) } else { v };
        let dup = Duplicate { object: object % objects(&v), member, position, escaped, value };
        let text = write_with_duplicate(&v, &dup, &mut 0);
        // Well-formed JSON (serde_json keeps the last of the two)...
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
        // ...that the strict parser refuses.
        prop_assert!(
            matches!(strict_json::parse(text.as_bytes()), Err(StrictJsonError::DuplicateMember(_))),
            "accepted {}", text
        );
    }
}

// ---- paths -------------------------------------------------------------------------

fn upstreams() -> BTreeMap<String, Upstream> {
    [("gobank", "127.0.0.1:8070"), ("hyperscalebank", "127.0.0.1:7070")]
        .into_iter()
        .map(|(n, a)| (n.to_string(), Upstream { name: n.to_string(), address: a.parse().unwrap() }))
        .collect()
}

/// The repository's policies: Go Bank on the obuk profile (its ready-made routes include
/// `/accounts/{AccountId}/balances` with `account_param`), Hyperscale Bank generic.
fn policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        PolicySet::load_dir(&dir, &upstreams(), &["demo-as".to_string()]).expect("the repository's policies load")
    })
}

/// The normal form README promises, restated independently of the router's code (the
/// repository's policies allow no `;` path parameters).
fn is_normal_form(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else { return false };
    if rest.is_empty() {
        return true;
    }
    let lower = rest.to_ascii_lowercase();
    !["%2f", "%2e", "%5c", "%3b"].iter().any(|e| lower.contains(e))
        && !rest.contains('\\')
        && !rest.contains(';')
        && rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Pieces of path segments an attacker would try.
const NASTY: &[&str] = &[
    "a", "Z", "0", "9", "A1", "GB", "1001", "-", ".", "..", "%", "%2e", "%2E", "%2f", "%2F", "%3b", "%3B", "%5c",
    "%5C", "%2D", "%41", "%25", "%zz", "%C3%A9", "%FF", ";", "\\", "é", "€", "😀", "\u{202e}", "+", "~", "=", "",
];

/// A segment: zero to three nasty pieces.
fn nasty_segment() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NASTY), 0..4).prop_map(|p| p.concat())
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![Method::GET, Method::POST, Method::PUT, Method::DELETE, Method::HEAD])
}

/// Paths near the routes: a prefix or not, route words, nasty segments anywhere.
fn nasty_path() -> impl Strategy<Value = String> {
    let word = prop_oneof![
        2 => prop::sample::select(vec!["gobank", "hyperscalebank", "accounts", "balances", "transactions", "domestic-payments"])
            .prop_map(str::to_string),
        3 => nasty_segment(),
    ];
    prop::collection::vec(word, 0..7).prop_map(|segs| format!("/{}", segs.join("/")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The router never panics, and every path it accepts is in normal form.
    #[test]
    fn router_accepts_only_normal_form(method in method(), path in nasty_path(), query in proptest::option::of("[a-z=&%;]{0,8}")) {
        if let Ok(m) = policies().route(&method, &path, query.as_deref()) {
            prop_assert!(is_normal_form(&path), "accepted {:?}", path);
            let forwarded = m.upstream_path.split('?').next().unwrap();
            prop_assert!(is_normal_form(forwarded), "forwards {:?}", forwarded);
        }
    }
}

// ---- the account: the gateway's against the bank's router --------------------------

/// The bank: a standard router (axum) that reads the account from the path.
fn bank() -> axum::Router {
    async fn account(PathParam(id): PathParam<String>) -> String {
        id
    }
    axum::Router::new()
        .route("/accounts/{AccountId}", get(account))
        .route("/accounts/{AccountId}/balances", get(account))
        .route("/accounts/{AccountId}/transactions", get(account))
}

/// The account the bank reads from the path the gateway forwards (None: no route there).
fn bank_account(runtime: &tokio::runtime::Runtime, upstream_path: &str) -> Option<String> {
    runtime.block_on(async {
        let request = Request::builder().uri(upstream_path).body(Body::empty()).ok()?;
        let response = bank().oneshot(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        Some(String::from_utf8(body.to_vec()).unwrap())
    })
}

/// A token whose consent grants exactly `account` (both banks' claim shapes).
fn token_granting(account: &str) -> TokenInfo {
    TokenInfo::from_response(json!({
        "active": true, "exp": NOW + 60, "scope": "openid accounts", "client_id": "tpp", "sub": "alice",
        "cnf": {"x5t#S256": "THUMB"},
        "aud": ["https://api.gobank.example", "https://api.hyperscalebank.example"], "ConsentId": "c1", "ConsentType": "account-access-consent", "Status": "Authorised", "AccountIDs": [account],
        "Permissions": ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail", "ReadTransactionsCredits"],
        "consent_id": "c1", "status": "authorized", "account_ids": [account],
    }))
    .unwrap()
}

/// Account identifiers as a bank might issue them, and some no bank would.
fn account_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9\\-.;%é😀 /\\\\+~]{1,8}"
}

#[derive(Debug, Clone, Copy)]
enum Spelling {
    Account,
    Word,
    Nasty,
}

/// `account` written as a path segment: each character raw or percent-encoded (either case).
fn spelled(account: &str, encode: &[bool], lower: bool) -> String {
    let mut out = String::new();
    for (i, c) in account.chars().enumerate() {
        if encode.get(i).copied().unwrap_or(false) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&if lower { format!("%{b:02x}") } else { format!("%{b:02X}") });
            }
        } else {
            out.push(c);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whenever the gateway authorises a request to an account route, the bank's router,
    /// given the path the gateway forwards, reads the account the gateway authorised, and
    /// that is the account the consent granted.
    #[test]
    fn the_bank_reads_the_account_the_gateway_authorised(
        account in account_id(),
        prefix in prop::sample::select(vec!["/gobank", "/hyperscalebank"]),
        suffix in prop::sample::select(vec!["", "/balances", "/transactions"]),
        // The account's segment: the account spelled (each character raw or
        // percent-encoded), one word of it, or nasty pieces; sometimes more glued on.
        how in prop::sample::select(vec![Spelling::Account, Spelling::Account, Spelling::Word, Spelling::Nasty]),
        encode in prop::collection::vec(any::<bool>(), 8),
        lower in any::<bool>(),
        word in any::<prop::sample::Index>(),
        nasty in nasty_segment(),
        extra in prop_oneof![3 => Just(String::new()), 1 => nasty_segment()],
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let words: Vec<&str> = account.split_whitespace().collect();
        let segment = match how {
            Spelling::Account => spelled(&account, &encode, lower),
            Spelling::Word if !words.is_empty() => spelled(words[word.index(words.len())], &encode, lower),
            Spelling::Word | Spelling::Nasty => nasty,
        };
        let segment = format!("{segment}{extra}");
        let path = format!("{prefix}/accounts/{segment}{suffix}");
        // What the gateway is given is the path of a request that parsed as HTTP.
        let Ok(uri) = path.parse::<http::Uri>() else { return Ok(()) };
        let Ok(m) = policies().route(&Method::GET, uri.path(), uri.query()) else { return Ok(()) };
        let Some(param) = m.route.account_param.clone() else { return Ok(()) };
        let presented = Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None };
        if m.evaluate(&token_granting(&account), presented, NOW).is_ok() {
            let authorised = m.params.iter().find(|(n, _)| *n == param).map(|(_, v)| v.clone());
            prop_assert_eq!(authorised.as_deref(), Some(account.as_str()), "the gateway's own parameter");
            let bank = bank_account(&runtime, &m.upstream_path);
            prop_assert_eq!(
                bank.as_deref(), Some(account.as_str()),
                "{} forwarded as {} to the bank", uri, m.upstream_path
            );
        }
    }
}

/// The differential above on inputs chosen by hand, so that it is known to be exercised
/// (an authorised request per case) and not only vacuously true.
#[test]
fn the_bank_reads_the_authorised_account_on_known_spellings() {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    for (path, account) in [
        ("/gobank/accounts/GB-1001/balances", "GB-1001"),
        ("/gobank/accounts/GB%2D1001/balances", "GB-1001"),
        ("/gobank/accounts/GB%2d1001/balances", "GB-1001"),
        ("/hyperscalebank/accounts/%C3%A9%41", "éA"),
        ("/gobank/accounts/A%201/transactions", "A 1"),
        ("/gobank/accounts/100%25/balances", "100%"),
    ] {
        let m = policies().route(&Method::GET, path, None).unwrap();
        let presented = Presented { certificate_thumbprint: Some("THUMB"), body: None, dpop_thumbprint: None };
        let decision = m.evaluate(&token_granting(account), presented, NOW);
        assert!(decision.is_ok(), "{path}: {decision:?}");
        assert_eq!(bank_account(&runtime, &m.upstream_path).as_deref(), Some(account), "{path}");
    }
}
