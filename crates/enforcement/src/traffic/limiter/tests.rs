use std::time::Duration;

use super::*;

fn bucket(name: &str, rate: u64, per: u64, burst: u64) -> LimitRule {
    LimitRule {
        name: name.into(),
        key: vec![KeyPart::ClientId],
        algorithm: Algorithm::TokenBucket { rate, per: Duration::from_secs(per), burst },
        client_ids: vec![],
        routes: vec![],
    }
}

fn quota(name: &str, limit: u64, window: u64) -> LimitRule {
    LimitRule {
        name: name.into(),
        key: vec![KeyPart::ClientId],
        algorithm: Algorithm::FixedWindow { limit, window },
        client_ids: vec![],
        routes: vec![],
    }
}

fn subject(client: &str) -> Subject<'_> {
    Subject { api: "bank", route: "/accounts", client_id: Some(client), ..Default::default() }
}

const T0: u64 = 1_700_000_040_000; // a minute boundary (Unix ms)

#[test]
fn token_bucket_admits_the_burst_then_the_rate() {
    let limiter = Limiter::new(1000);
    let rules = [bucket("tpp", 2, 1, 4)]; // 2/s, bursts of 4
    let at = |s: f64| Duration::from_secs_f64(s);
    for i in 0..4 {
        let f = limiter.admit_at(&rules, None, &[], &subject("a"), at(10.0), T0).unwrap();
        assert_eq!(f.current, format!("\"tpp\";r={};t={}", 3 - i, if i == 0 { 1 } else { (i + 2) / 2 }));
        assert_eq!(f.policy, "\"tpp\";q=4;w=2");
    }
    let over = limiter.admit_at(&rules, None, &[], &subject("a"), at(10.0), T0).unwrap_err();
    assert_eq!((over.rule.as_str(), over.retry_after_seconds, over.unattended), ("tpp", 1, false));
    // Another client has its own bucket.
    assert!(limiter.admit_at(&rules, None, &[], &subject("b"), at(10.0), T0).is_ok());
    // Half a second refills one token, not two.
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), at(10.5), T0).is_ok());
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), at(10.5), T0).is_err());
}

#[test]
fn fixed_window_resets_at_the_boundary() {
    let limiter = Limiter::new(1000);
    let rules = [quota("minute", 3, 60)];
    let m = Duration::ZERO;
    for r in [2, 1, 0] {
        let f = limiter.admit_at(&rules, None, &[], &subject("a"), m, T0 + 15_000).unwrap();
        assert_eq!(f.current, format!("\"minute\";r={r};t=45"));
    }
    let over = limiter.admit_at(&rules, None, &[], &subject("a"), m, T0 + 15_000).unwrap_err();
    assert_eq!(over.retry_after_seconds, 45);
    assert_eq!(over.fields.current, "\"minute\";r=0;t=45");
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), m, T0 + 59_999).is_err());
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), m, T0 + 60_000).is_ok());
}

#[test]
fn a_refused_request_takes_nothing_from_other_rules() {
    let limiter = Limiter::new(1000);
    let rules = [quota("day", 10, 86_400), quota("minute", 1, 60)];
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), Duration::ZERO, T0).is_ok());
    for _ in 0..5 {
        assert_eq!(limiter.admit_at(&rules, None, &[], &subject("a"), Duration::ZERO, T0).unwrap_err().rule, "minute");
    }
    let f = limiter.admit_at(&rules, None, &[], &subject("a"), Duration::ZERO, T0 + 60_000).unwrap();
    assert!(f.current.starts_with("\"day\";r=8;"), "{}", f.current);
}

#[test]
fn rules_apply_to_their_clients_and_routes() {
    let limiter = Limiter::new(1000);
    let mut rule = quota("only-a", 1, 60);
    rule.client_ids = vec!["a".into()];
    rule.routes = vec!["/accounts".into()];
    let rules = [rule];
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), Duration::ZERO, T0).is_ok());
    assert!(limiter.admit_at(&rules, None, &[], &subject("a"), Duration::ZERO, T0).is_err());
    let b = limiter.admit_at(&rules, None, &[], &subject("b"), Duration::ZERO, T0).unwrap();
    assert!(b.is_empty());
    let other_route = Subject { route: "/balances", ..subject("a") };
    assert!(limiter.admit_at(&rules, None, &[], &other_route, Duration::ZERO, T0).unwrap().is_empty());
}

#[test]
fn unattended_access_counts_per_consent_and_account_without_the_customer() {
    let limiter = Limiter::new(1000);
    let rule = UnattendedAccess {
        max_requests: 4,
        window: Duration::from_secs(86_400),
        consent_types: vec!["account-access-consent".into()],
    };
    let ais = ["account-access-consent".to_string()];
    let unattended = |account| Subject { consent_id: Some("c1"), account: Some(account), ..subject("a") };
    let day_ms = 86_400_000;
    for i in 0..4u64 {
        let f = limiter.admit_at(&[], Some(&rule), &ais, &unattended("A1"), Duration::ZERO, T0 + i * 1000).unwrap();
        assert_eq!(f.policy, "\"psd2-unattended\";q=4;w=86400");
        assert!(f.current.starts_with(&format!("\"psd2-unattended\";r={};", 3 - i)));
    }
    let over = limiter.admit_at(&[], Some(&rule), &ais, &unattended("A1"), Duration::ZERO, T0 + 10_000).unwrap_err();
    assert!(over.unattended);
    assert_eq!(over.retry_after_seconds, 86_390);
    // The customer present: not counted, not limited.
    let present = Subject { customer_present: true, ..unattended("A1") };
    assert!(limiter.admit_at(&[], Some(&rule), &ais, &present, Duration::ZERO, T0 + 10_000).unwrap().is_empty());
    // Another account of the consent, and a payment route, have their own counts / none.
    assert!(limiter.admit_at(&[], Some(&rule), &ais, &unattended("A2"), Duration::ZERO, T0 + 10_000).is_ok());
    let pay = ["domestic-payment-consent".to_string()];
    assert!(limiter.admit_at(&[], Some(&rule), &pay, &unattended("A1"), Duration::ZERO, T0).unwrap().is_empty());
    // The window slides: a day after the first request, one more.
    assert!(limiter.admit_at(&[], Some(&rule), &ais, &unattended("A1"), Duration::ZERO, T0 + day_ms).is_ok());
    assert!(limiter.admit_at(&[], Some(&rule), &ais, &unattended("A1"), Duration::ZERO, T0 + day_ms).is_err());
}

#[test]
fn memory_is_bounded() {
    let limiter = Limiter::new(100);
    let rules = [quota("q", 5, 60)];
    for i in 0..5000 {
        let client = format!("client-{i}");
        let _ = limiter.admit_at(&rules, None, &[], &subject(&client), Duration::ZERO, T0);
    }
    assert!(limiter.counters().1 <= 100, "{:?}", limiter.counters());
    // Request logs weigh by their length.
    let rule = UnattendedAccess {
        max_requests: 160,
        window: Duration::from_secs(60),
        consent_types: vec!["account-access-consent".into()],
    };
    let ais = ["account-access-consent".to_string()];
    for i in 0..1000 {
        let consent = format!("c{i}");
        let s = Subject { consent_id: Some(&consent), ..subject("a") };
        let _ = limiter.admit_at(&[], Some(&rule), &ais, &s, Duration::ZERO, T0);
    }
    let (count, weight) = limiter.counters();
    assert!(weight <= 100 && count <= 100, "{count} counters weighing {weight}");
}
