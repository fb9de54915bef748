//! Fleet-wide rate limits, quotas and PSD2 unattended-access counts: three gateways (the
//! in-process one and two `fapi-gateway run` processes) on one real Redis. With a lease of
//! one unit the fleet admits exactly the limit, whichever replica a request reaches; with
//! Redis stopped every replica still answers at once, counting its share of each limit.

mod common;
#[path = "common/fleet.rs"]
mod fleet_harness;

use std::time::{Duration, Instant};

use common::*;
use fleet_harness::*;

const FALLBACK: &str = "fapi_gateway_cluster_limits_fallback_total";
const CALLS_OK: &str = "fapi_gateway_cluster_limit_calls_total{result=\"ok\"}";

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

async fn fleet(redis: &Redis, cluster: &str, policy: &str) -> Fleet {
    let appends = vec![("gobank.toml".to_string(), policy.to_string())];
    Fleet::start_with_policy(redis, 30.0, cluster, 2, true, appends).await
}

/// GET `path` at replica `i` (bounded in time: a hang fails the test).
async fn get(f: &Fleet, i: usize, path: &str, token: &str) -> reqwest::Response {
    let url = format!("https://{}{path}", f.gateway(i));
    let sent = f.w.tpp.get(url).bearer_auth(token).send();
    tokio::time::timeout(Duration::from_secs(5), sent).await.expect("answered within 5 s").unwrap()
}

async fn token(f: &Fleet, accounts: &[&str]) -> String {
    let consent = f.w.consent(&f.w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", accounts).await;
    f.w.token(&f.w.tpp, Some(&consent), "openid accounts", None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_spread_over_the_replicas_gets_exactly_the_tpp_quota_and_rate() {
    let redis = Redis::start().await;
    let policy = "\n[[quota]]\nname = \"tpp-day\"\nkey = [\"client_id\"]\nlimit = 7\nper = \"day\"\n\
                  routes = [\"/accounts\"]\n\
                  \n[[rate_limit]]\nname = \"tpp-rate\"\nkey = [\"client_id\"]\nrate = 5\nper = \"hour\"\nburst = 5\n\
                  routes = [\"/accounts/{AccountId}\"]\n";
    let f = fleet(&redis, "limit_lease = 1\nreplicas_hint = 3", policy).await;
    assert_eq!(f.count(), 3);
    let token = token(&f, &["GB-1001"]).await;

    // The quota: round-robin, one at a time.
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(get(&f, i % 3, "/gobank/accounts", &token).await.status().as_u16());
    }
    assert_eq!(statuses, [[200; 7].as_slice(), &[429; 5]].concat(), "{statuses:?}");
    for i in 0..3 {
        let r = get(&f, i, "/gobank/accounts", &token).await;
        assert_eq!(r.status(), 429, "replica {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"tpp-day\";q=7;w=86400");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((1..=86_400).contains(&retry), "{retry}");
    }

    // The token bucket: a concurrent burst of 15, five to each replica.
    let burst = (0..15).map(|i| get(&f, i % 3, "/gobank/accounts/GB-1001", &token));
    let statuses: Vec<u16> = futures::future::join_all(burst).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 10, "{statuses:?}");
    // Every replica counted in Redis, none fell back.
    for i in 0..3 {
        assert!(f.metric(i, CALLS_OK).await >= 1.0, "replica {i} asked Redis");
        assert_eq!(f.metric(i, FALLBACK).await, 0.0, "replica {i}");
    }
    assert_eq!(f.w.fixtures.go_bank.requests(), 12, "nothing over a limit reached the bank");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_access_is_four_a_day_across_the_fleet() {
    let redis = Redis::start().await;
    // The default lease (10) does not apply to the unattended log: it is counted whole in Redis.
    let f = fleet(&redis, "replicas_hint = 3", "\n[unattended_access]\n").await;
    let token = token(&f, &["GB-1001", "GB-1002"]).await;
    let path = "/gobank/accounts/GB-1001/balances";
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(get(&f, i % 3, path, &token).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    for i in 0..3 {
        let r = get(&f, i, path, &token).await;
        assert_eq!(r.status(), 429, "replica {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"psd2-unattended\";q=4;w=86400");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((86_000..=86_400).contains(&retry), "{retry}");
        // The customer present: served at every replica.
        let url = format!("https://{}{path}", f.gateway(i));
        let present = f.w.tpp.get(url).bearer_auth(&token).header("x-fapi-customer-ip-address", "203.0.113.7");
        assert_eq!(present.send().await.unwrap().status(), 200, "replica {i}");
    }
    // The consent's other account has four of its own, wherever they are asked.
    for i in 0..4 {
        assert_eq!(get(&f, 2 - i % 3, "/gobank/accounts/GB-1002/balances", &token).await.status(), 200);
    }
    assert_eq!(get(&f, 0, "/gobank/accounts/GB-1002/balances", &token).await.status(), 429);
    // Redis holds digests only: no consent id, client id or account in its keys.
    let keys = redis_keys(&redis).await;
    assert!(!keys.is_empty());
    for forbidden in ["GB-1001", "GB-1002", "tpp", "consent"] {
        assert!(!keys.to_lowercase().contains(&forbidden.to_lowercase()), "{forbidden} in {keys}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_every_replica_answers_at_once_counting_its_share() {
    let mut redis = Redis::start().await;
    let policy = "\n[[quota]]\nname = \"tpp-day\"\nkey = [\"client_id\"]\nlimit = 30\nper = \"day\"\n";
    let f = fleet(&redis, "limit_lease = 1\nreplicas_hint = 3\nredis_timeout_ms = 200", policy).await;
    let token = token(&f, &["GB-1001"]).await;
    for i in 0..3 {
        assert_eq!(get(&f, i, "/gobank/accounts", &token).await.status(), 200);
    }
    redis.kill();
    // Each replica now counts 30 ÷ 3 = 10 alone, and never waits on Redis for long.
    for i in 0..3 {
        let started = Instant::now();
        let mut statuses = Vec::new();
        for _ in 0..12 {
            statuses.push(get(&f, i, "/gobank/accounts", &token).await.status().as_u16());
        }
        assert_eq!(statuses, [[200; 10].as_slice(), &[429; 2]].concat(), "replica {i}: {statuses:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "replica {i}: {:?}", started.elapsed());
        assert!(f.metric(i, FALLBACK).await >= 12.0, "replica {i}");
    }
}

/// `KEYS *` at `redis`, as one string.
async fn redis_keys(redis: &Redis) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
    s.write_all(b"KEYS *\r\n").await.unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}
