//! The per-request metrics' label handles, resolved once per route and outcome and reused.
//!
//! `with_label_values` hashes the label values, takes the metric family's lock and clones
//! the child on every call; on the proxy's hot path that is three times a request, with
//! the lock's cache line bouncing between worker threads. Each thread keeps the children
//! it has used instead: the labels are bounded by the configuration (unmatched paths count
//! under empty labels), so the cache is too.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Weak};

use fapi_enforcement::metrics::Metrics;
use prometheus::{Histogram, IntCounter};

/// `fapi_gateway_requests_total` and `fapi_gateway_request_duration_seconds` of one
/// request's labels.
#[derive(Clone)]
pub struct RequestHandles {
    pub requests: IntCounter,
    pub duration: Histogram,
}

/// The labels of a finished request.
#[derive(Clone, Copy, Hash)]
pub struct RequestLabels<'a> {
    pub api: &'a str,
    pub route: &'a str,
    pub method: &'a str,
    pub status: &'a str,
    pub decision: &'a str,
}

struct Slot {
    /// Whose children these are: held weakly, so the address stays this `Metrics`'s (a
    /// `Weak` keeps the allocation) and a dropped gateway's entries are recognised.
    metrics: Weak<Metrics>,
    labels: [Box<str>; 5],
    handles: RequestHandles,
}

/// An upstream histogram by gateway and API.
type UpstreamSlot = (Weak<Metrics>, Box<str>, Histogram);

thread_local! {
    static REQUESTS: RefCell<HashMap<u64, Vec<Slot>>> = RefCell::new(HashMap::new());
    static UPSTREAM: RefCell<HashMap<u64, Vec<UpstreamSlot>>> = RefCell::new(HashMap::new());
}

fn hash_of(metrics: &Arc<Metrics>, labels: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (Arc::as_ptr(metrics) as usize).hash(&mut h);
    labels.hash(&mut h);
    h.finish()
}

/// The request counter and duration histogram of `labels` in `metrics`.
pub fn request_handles(metrics: &Arc<Metrics>, labels: RequestLabels<'_>) -> RequestHandles {
    let values = [labels.api, labels.route, labels.method, labels.status, labels.decision];
    let hash = hash_of(metrics, labels);
    REQUESTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let slots = cache.entry(hash).or_default();
        if let Some(slot) = slots.iter().find(|s| {
            std::ptr::eq(s.metrics.as_ptr(), Arc::as_ptr(metrics))
                && s.labels.iter().map(|l| &**l).eq(values.iter().copied())
        }) {
            return slot.handles.clone();
        }
        // A gateway of this process that is gone (tests run several) leaves its slots.
        slots.retain(|s| s.metrics.strong_count() > 0);
        let handles = RequestHandles {
            requests: metrics.requests.with_label_values(&values),
            duration: metrics.request_duration.with_label_values(&[labels.api]),
        };
        slots.push(Slot { metrics: Arc::downgrade(metrics), labels: values.map(Box::from), handles: handles.clone() });
        handles
    })
}

/// The upstream duration histogram of `api` in `metrics`.
pub fn upstream_duration(metrics: &Arc<Metrics>, api: &str) -> Histogram {
    let hash = hash_of(metrics, api);
    UPSTREAM.with(|cache| {
        let mut cache = cache.borrow_mut();
        let slots = cache.entry(hash).or_default();
        if let Some((_, _, h)) =
            slots.iter().find(|(m, a, _)| std::ptr::eq(m.as_ptr(), Arc::as_ptr(metrics)) && **a == *api)
        {
            return h.clone();
        }
        slots.retain(|(m, _, _)| m.strong_count() > 0);
        let h = metrics.upstream_duration.with_label_values(&[api]);
        slots.push((Arc::downgrade(metrics), api.into(), h.clone()));
        h
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(status: &str) -> RequestLabels<'_> {
        RequestLabels { api: "gobank", route: "/accounts", method: "GET", status, decision: "allowed" }
    }

    #[test]
    fn handles_count_where_with_label_values_would_per_gateway() {
        let a = Arc::new(Metrics::new());
        let b = Arc::new(Metrics::new());
        for _ in 0..3 {
            request_handles(&a, labels("200")).requests.inc();
        }
        request_handles(&a, labels("404")).requests.inc();
        request_handles(&b, labels("200")).requests.inc();
        request_handles(&a, labels("200")).duration.observe(0.5);
        upstream_duration(&a, "gobank").observe(0.25);
        upstream_duration(&a, "gobank").observe(0.25);
        let count = |m: &Metrics, status: &str| {
            m.requests.with_label_values(&["gobank", "/accounts", "GET", status, "allowed"]).get()
        };
        assert_eq!((count(&a, "200"), count(&a, "404"), count(&b, "200")), (3, 1, 1));
        assert_eq!(a.request_duration.with_label_values(&["gobank"]).get_sample_count(), 1);
        assert_eq!(a.upstream_duration.with_label_values(&["gobank"]).get_sample_sum(), 0.5);
        assert_eq!(b.upstream_duration.with_label_values(&["gobank"]).get_sample_count(), 0);
        // A gateway started after another was dropped counts afresh, even at its address.
        drop(b);
        let c = Arc::new(Metrics::new());
        request_handles(&c, labels("200")).requests.inc();
        assert_eq!(count(&c, "200"), 1);
    }
}
