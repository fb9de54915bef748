//! The gateway's per-request work without the network: route match and policy checks
//! (10 and 500 routes), token hashing, a cache hit, thumbprint comparison and building a
//! refusal. `cargo bench --bench hot_path`; figures in benches/RESULTS.md.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use fapi_enforcement::cache::{IntrospectionCache, TokenKey};
use fapi_enforcement::config::{CacheConfig, Upstream};
use fapi_enforcement::introspection::{IntrospectionError, Introspector, TokenInfo};
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::{PolicySet, Presented};
use fapi_enforcement::refusal::{ConsentRefusal, Refusal};
use serde_json::json;

/// A UK API with `n` account routes (each under its own first segment, like a bank with
/// many products) plus the profile's built-in routes.
fn policies(n: usize) -> PolicySet {
    let mut source = String::from("[api]\nprefix = \"/bank\"\nupstream = \"bank\"\nprofile = \"obuk\"\n");
    for i in 0..n {
        source.push_str(&format!(
            "[[route]]\npath = \"/product-{i}/accounts/{{AccountId}}/balances\"\nscopes = [\"accounts\"]\npermissions = [\"ReadBalances\"]\naccount_param = \"AccountId\"\n"
        ));
    }
    let upstreams = BTreeMap::from([(
        "bank".to_string(),
        Upstream { name: "bank".into(), address: "127.0.0.1:8070".parse().unwrap() },
    )]);
    PolicySet::new(vec![PolicySet::parse_api(Path::new("bench.toml"), &source, &upstreams, &["as".into()]).unwrap()])
}

fn token() -> TokenInfo {
    TokenInfo::from_response(json!({
        "active": true, "exp": 4_000_000_000u64, "scope": "openid accounts", "client_id": "financroo", "sub": "alice",
        "cnf": {"x5t#S256": "hYzMMLDCbS4kSt3vjmYlgh_28ywpqFhrLbYGh4Lvztg"}, "ConsentId": "c-1", "Status": "Authorised",
        "Permissions": ["ReadAccountsBasic", "ReadBalances"], "AccountIDs": ["GB-1001", "GB-1002"]
    }))
    .unwrap()
}

fn decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("decision");
    let token = token();
    let method = http::Method::GET;
    for n in [10usize, 500] {
        let set = policies(n);
        let path = format!("/bank/product-{}/accounts/GB-1001/balances", n - 1);
        group.bench_with_input(BenchmarkId::new("route_and_checks", n), &n, |b, _| {
            b.iter(|| {
                let m = set.route(&method, black_box(&path), None).unwrap();
                let presented = Presented {
                    certificate_thumbprint: Some("hYzMMLDCbS4kSt3vjmYlgh_28ywpqFhrLbYGh4Lvztg"),
                    body: None,
                    dpop_thumbprint: None,
                };
                black_box(m.evaluate(&token, presented, 1_000).unwrap());
            })
        });
        group.bench_with_input(BenchmarkId::new("route_only", n), &n, |b, _| {
            b.iter(|| black_box(set.route(&method, black_box(&path), None).unwrap().route.line))
        });
    }
    group.finish();
}

struct Never;

#[async_trait]
impl Introspector for Never {
    async fn introspect(&self, _token: &str) -> Result<TokenInfo, IntrospectionError> {
        Ok(token())
    }
}

fn pieces(c: &mut Criterion) {
    let opaque = "bbyCVUPegpzkT9t49HlazeRpq96zKXIgKY_kjPzqCsU";
    c.bench_function("token_hash", |b| b.iter(|| black_box(TokenKey::new("demo-as", black_box(opaque)))));

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let config =
        CacheConfig { max_ttl: Duration::from_secs(300), inactive_ttl: Duration::from_secs(5), capacity: 100_000 };
    let cache = Arc::new(IntrospectionCache::new("demo-as", &config, Arc::new(Never), Arc::new(Metrics::new())));
    let key = cache.key(opaque);
    runtime.block_on(cache.lookup(key, opaque, None)).unwrap();
    c.bench_function("cache_hit", |b| {
        b.to_async(&runtime).iter(|| async { black_box(cache.lookup(key, opaque, None).await.unwrap().1) })
    });

    let bound = "hYzMMLDCbS4kSt3vjmYlgh_28ywpqFhrLbYGh4Lvztg";
    let der = vec![7u8; 600];
    c.bench_function("thumbprint_of_certificate", |b| {
        b.iter(|| black_box(fapi_enforcement::client_identity::thumbprint(black_box(&der))))
    });
    c.bench_function("thumbprint_compare", |b| {
        b.iter(|| black_box(black_box(bound).trim_end_matches('=') == black_box(bound).trim_end_matches('=')))
    });
    let refusal = Refusal::Consent(ConsentRefusal::AccountNotGranted { account: "GB-1002".into() });
    c.bench_function("refusal_response", |b| {
        b.iter(|| black_box(refusal.to_response(black_box("93bac548-d2de-4546-b106-880a5018460d"))))
    });
}

criterion_group!(benches, decision, pieces);
criterion_main!(benches);
