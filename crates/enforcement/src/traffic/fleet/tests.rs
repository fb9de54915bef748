use std::collections::HashMap;
use std::sync::atomic::AtomicBool;

use super::*;

/// Shared counters in memory (windows and logs), as a Redis would keep them.
#[derive(Default)]
struct Memory {
    counts: Mutex<HashMap<String, u64>>,
    calls: AtomicU64,
    fallbacks: AtomicU64,
    down: AtomicBool,
    lease: u64,
    replicas: u64,
}

#[async_trait]
impl SharedCounters for Memory {
    async fn take(&self, key: &str, take: SharedTake) -> Result<SharedGrant, SharedUnavailable> {
        if self.down.load(Ordering::Relaxed) {
            return Err(SharedUnavailable);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut counts = self.counts.lock().unwrap();
        let count = counts.entry(key.to_string()).or_default();
        let (limit, want) = match take {
            SharedTake::Window { limit, want, .. } => (limit, want),
            SharedTake::Log { max, .. } => (max, 1),
            SharedTake::Bucket { .. } => unimplemented!(),
        };
        let granted = want.min(limit.saturating_sub(*count));
        *count += granted;
        Ok(SharedGrant { granted, remaining: limit - *count, retry_ms: 1000 })
    }
    fn lease_size(&self) -> u64 {
        self.lease
    }
    fn replicas(&self) -> u64 {
        self.replicas
    }
    fn fell_back(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

fn quota(limit: u64) -> LimitRule {
    LimitRule {
        name: "q".into(),
        key: vec![KeyPart::ClientId],
        algorithm: Algorithm::FixedWindow { limit, window: 3600 },
        client_ids: vec![],
        routes: vec![],
    }
}

fn subject(client: &str) -> Subject<'_> {
    Subject { api: "a", route: "/r", client_id: Some(client), ..Subject::default() }
}

async fn admitted(replicas: &[FleetLimiter], rules: &[LimitRule], n: usize) -> usize {
    let mut ok = 0;
    for i in 0..n {
        ok += usize::from(replicas[i % replicas.len()].admit(rules, None, &[], &subject("tpp")).await.is_ok());
    }
    ok
}

#[tokio::test]
async fn leases_never_admit_more_than_the_window_fleet_wide() {
    for (lease, replicas) in [(1, 3), (4, 3), (10, 2)] {
        let shared = Arc::new(Memory { lease, replicas, ..Memory::default() });
        let fleet: Vec<FleetLimiter> = (0..replicas).map(|_| FleetLimiter::new(shared.clone(), 1000)).collect();
        let ok = admitted(&fleet, &[quota(20)], 60).await;
        let stranded = (replicas - 1) * (lease - 1);
        assert!(ok as u64 <= 20 && ok as u64 >= 20 - stranded, "lease {lease}: {ok}");
        if lease == 1 {
            assert_eq!(ok, 20);
        }
        // A refused window is remembered: the shared store is not asked again per request.
        let calls = shared.calls.load(Ordering::Relaxed);
        admitted(&fleet, &[quota(20)], 30).await;
        assert_eq!(shared.calls.load(Ordering::Relaxed), calls);
    }
}

#[tokio::test]
async fn a_request_refused_by_a_later_rule_gives_its_units_back() {
    let shared = Arc::new(Memory { lease: 5, replicas: 1, ..Memory::default() });
    let fleet = FleetLimiter::new(shared, 1000);
    let rules = [quota(10), LimitRule { name: "tight".into(), ..quota(2) }];
    assert_eq!(admitted(std::slice::from_ref(&fleet), &rules, 6).await, 2);
    // The units the refused requests took from "q" were returned: eight are left there.
    assert_eq!(admitted(std::slice::from_ref(&fleet), &rules[..1], 20).await, 8);
}

#[tokio::test]
async fn unattended_access_is_counted_in_the_shared_log() {
    let shared = Arc::new(Memory { lease: 10, replicas: 2, ..Memory::default() });
    let fleet: Vec<FleetLimiter> = (0..2).map(|_| FleetLimiter::new(shared.clone(), 1000)).collect();
    let u =
        UnattendedAccess { max_requests: 4, window: Duration::from_secs(86_400), consent_types: vec!["aisp".into()] };
    let kinds = ["aisp".to_string()];
    let s = Subject { consent_id: Some("c-1"), account: Some("acc"), ..subject("tpp") };
    let mut results = Vec::new();
    for i in 0..7 {
        results.push(fleet[i % 2].admit(&[], Some(&u), &kinds, &s).await.is_ok());
    }
    assert_eq!(results, [true, true, true, true, false, false, false]);
    let refused = fleet[0].admit(&[], Some(&u), &kinds, &s).await.unwrap_err();
    assert!(refused.unattended);
    // The customer present: not counted.
    let present = Subject { customer_present: true, ..s };
    assert!(fleet[1].admit(&[], Some(&u), &kinds, &present).await.is_ok());
    // Nothing identifying reached the store.
    let keys: Vec<String> = shared.counts.lock().unwrap().keys().cloned().collect();
    assert!(keys.iter().all(|k| !k.contains("c-1") && !k.contains("acc") && !k.contains("tpp")), "{keys:?}");
}

#[tokio::test]
async fn without_the_shared_store_each_replica_counts_its_share() {
    let shared = Arc::new(Memory { lease: 1, replicas: 3, ..Memory::default() });
    shared.down.store(true, Ordering::Relaxed);
    let fleet = FleetLimiter::new(shared.clone(), 1000);
    assert_eq!(admitted(std::slice::from_ref(&fleet), &[quota(30)], 40).await, 10);
    assert_eq!(shared.fallbacks.load(Ordering::Relaxed), 40);
    // Not asked again within a second of failing.
    shared.down.store(false, Ordering::Relaxed);
    assert!(fleet.admit(&[quota(30)], None, &[], &subject("other")).await.is_ok());
    assert_eq!(shared.calls.load(Ordering::Relaxed), 0);
}
