//! Traffic control end to end: per-TPP rate limits and quotas declared in policy files,
//! and PSD2's unattended-access limit, through the real gateway over mutual TLS.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

fn with_policy(text: &str) -> Options {
    Options { policy_appends: vec![("gobank.toml".into(), text.into())], ..Options::default() }
}

/// Requests answered with `decision`, over every route.
async fn decisions(w: &World, decision: &str) -> f64 {
    let (_, text) = w.admin("/metrics").await;
    let label = format!("decision=\"{decision}\"");
    text.lines()
        .filter(|l| l.starts_with("fapi_gateway_requests_total{") && l.contains(&label))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// A token for a Go Bank consent of `client` (the TPP or the other TPP).
async fn token_of(w: &World, client: &reqwest::Client) -> (String, String) {
    let consent = w.consent(client, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001"]).await;
    (consent.clone(), w.token(client, Some(&consent), "openid accounts", None).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_tpp_rate_gets_exactly_the_bucket_then_429s() {
    let w = World::start_with(with_policy(
        "\n[[rate_limit]]\nname = \"per-tpp\"\nkey = [\"client_id\"]\nrate = 5\nper = \"minute\"\nburst = 5\n",
    ))
    .await;
    let (_, token) = token_of(&w, &w.tpp).await;
    let (_, other_token) = token_of(&w, &w.other_tpp).await;

    // Sequentially: the first five pass with the remaining count going down.
    for remaining in (0..5).rev() {
        let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit-policy"), "\"per-tpp\";q=5;w=60");
        assert!(
            header(&r, "ratelimit").starts_with(&format!("\"per-tpp\";r={remaining};t=")),
            "{}",
            header(&r, "ratelimit")
        );
    }
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=12).contains(&retry), "one token every 12 s: {retry}");
    assert_eq!(header(&r, "ratelimit-policy"), "\"per-tpp\";q=5;w=60");
    assert_eq!(header(&r, "ratelimit"), format!("\"per-tpp\";r=0;t={retry}"));
    assert!(uuid::Uuid::try_parse(&header(&r, "x-fapi-interaction-id")).is_ok());
    assert_eq!(header(&r, "www-authenticate"), "", "a limit is not an authentication problem");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["Code"], "429 TooManyRequests");
    assert!(body["Message"].as_str().unwrap().contains("per-tpp"), "{body}");
    assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.UnexpectedError");
    assert_eq!(w.fixtures.go_bank.requests(), 5, "nothing over the limit reached the bank");

    // The other TPP has a bucket of its own: a concurrent burst of 12 gets exactly 5 through.
    let burst = (0..12).map(|_| w.get(&w.other_tpp, "/gobank/accounts", &other_token));
    let statuses: Vec<u16> = futures::future::join_all(burst).await.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 5, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 7, "{statuses:?}");
    assert_eq!(w.fixtures.go_bank.requests(), 10);
    assert_eq!(decisions(&w, "rate_limited").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_window_refuses_until_the_next_window_per_consent_and_route() {
    let w = World::start_with(with_policy(
        "\n[[quota]]\nname = \"per-consent\"\nkey = [\"consent\", \"route\"]\nlimit = 3\nper = \"second\"\n",
    ))
    .await;
    let (_, token) = token_of(&w, &w.tpp).await;
    let (_, second_token) = token_of(&w, &w.tpp).await;
    // Warm the introspection cache, so the counted requests are fast.
    w.get(&w.tpp, "/gobank/balances", &token).await;
    w.get(&w.tpp, "/gobank/balances", &second_token).await;
    let mut attempts = 0;
    loop {
        attempts += 1;
        // Start just after a window opens (windows are aligned to the epoch's seconds).
        let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis() as u64;
        tokio::time::sleep(Duration::from_millis(1010 - ms)).await;
        let window = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(w.get(&w.tpp, "/gobank/accounts", &token).await.status().as_u16());
        }
        // The same consent on another route, and another consent: counted apart.
        let other_route = w.get(&w.tpp, "/gobank/transactions", &token).await;
        let other_consent = w.get(&w.tpp, "/gobank/accounts", &second_token).await;
        let last = w.get(&w.tpp, "/gobank/accounts", &token).await;
        let still_same_window = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() == window;
        if !still_same_window {
            assert!(attempts < 4, "the machine is too slow for one-second windows");
            continue;
        }
        assert_eq!(statuses, vec![200, 200, 200, 429, 429]);
        assert_eq!(other_route.status(), 200);
        assert_eq!(other_consent.status(), 200);
        assert_eq!(last.status(), 429);
        assert_eq!(header(&last, "retry-after"), "1");
        assert_eq!(header(&last, "ratelimit"), "\"per-consent\";r=0;t=1");
        break;
    }
    // The next window admits three again.
    let ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_millis() as u64;
    tokio::time::sleep(Duration::from_millis(1010 - ms)).await;
    let r = w.get(&w.tpp, "/gobank/accounts", &token).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "ratelimit").starts_with("\"per-consent\";r=2;"), "{}", header(&r, "ratelimit"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_account_access_is_four_per_day_per_consent_and_account() {
    let w = World::start_with(with_policy("\n[unattended_access]\n")).await;
    let consent = w.consent(&w.tpp, "gobank", &GO_BANK_PERMISSIONS, "alice", &["GB-1001", "GB-1002"]).await;
    let token = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    let present = |path: &str| {
        w.tpp.get(w.url(path)).bearer_auth(&token).header("x-fapi-customer-ip-address", "203.0.113.7").send()
    };

    // With the customer present: never counted.
    for _ in 0..6 {
        let r = present("/gobank/accounts/GB-1001/balances").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "ratelimit"), "", "customer-present calls are not counted");
    }
    // Without: four over any endpoint of the account, then refused.
    let paths =
        ["/gobank/accounts/GB-1001/balances", "/gobank/accounts/GB-1001", "/gobank/accounts/GB-1001/transactions"];
    for i in 0..4 {
        let r = w.get(&w.tpp, paths[i % 3], &token).await;
        assert_eq!(r.status(), 200, "unattended call {i}");
        assert_eq!(header(&r, "ratelimit-policy"), "\"psd2-unattended\";q=4;w=86400");
        assert!(header(&r, "ratelimit").starts_with(&format!("\"psd2-unattended\";r={};", 3 - i)));
    }
    let bank_before = w.fixtures.go_bank.requests();
    for path in paths {
        let r = w.get(&w.tpp, path, &token).await;
        assert_eq!(r.status(), 429, "{path}");
        let retry: u64 = header(&r, "retry-after").parse().unwrap();
        assert!((86_000..=86_400).contains(&retry), "{retry}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["Errors"][0]["ErrorCode"], "UK.OBIE.Header.Missing");
        assert_eq!(body["Errors"][0]["Path"], "x-fapi-customer-ip-address");
    }
    // A malformed customer address does not lift the limit.
    let r =
        w.tpp.get(w.url(paths[0])).bearer_auth(&token).header("x-fapi-customer-ip-address", "me").send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(w.fixtures.go_bank.requests(), bank_before, "refused calls never reach the bank");
    // The customer present again: served. Another account of the consent: its own four.
    assert_eq!(present(paths[0]).await.unwrap().status(), 200);
    for _ in 0..4 {
        assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1002/balances", &token).await.status(), 200);
    }
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1002/balances", &token).await.status(), 429);
    assert_eq!(decisions(&w, "unattended_limit").await, 5.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unattended_limit_numbers_are_configurable_per_api() {
    let w = World::start_with(with_policy("\n[unattended_access]\nmax_requests = 2\nwindow_seconds = 3600\n")).await;
    let (_, token) = token_of(&w, &w.tpp).await;
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    assert_eq!(w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await.status(), 200);
    let r = w.get(&w.tpp, "/gobank/accounts/GB-1001", &token).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "ratelimit-policy"), "\"psd2-unattended\";q=2;w=3600");
    // The Hyperscale Bank API (no [unattended_access]) is not limited.
    let consent = w.consent(&w.tpp, "hyperscalebank", &[], "alice", &["HS-1001"]).await;
    let hs = w.token(&w.tpp, Some(&consent), "openid accounts", None).await;
    for _ in 0..5 {
        assert_eq!(w.get(&w.tpp, "/hyperscalebank/accounts/HS-1001", &hs).await.status(), 200);
    }
}
