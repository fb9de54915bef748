//! `[cache]`: how long and how many introspection results are kept.

use std::time::Duration;

use super::file::CacheSection;
use crate::cache::CacheConfig;
use crate::diagnostics::Diagnostics;

pub(super) fn validate(c: &CacheSection, d: &mut Diagnostics) -> CacheConfig {
    let mut seconds = |name: &str, v: f64| {
        if v.is_finite() && (0.0..=86_400.0).contains(&v) {
            Duration::from_secs_f64(v)
        } else {
            let at = d.key(&["cache", name]);
            d.error(at, format!("cache.{name} must be between 0 and 86400"));
            Duration::ZERO
        }
    };
    let max_ttl = seconds("max_ttl_seconds", c.max_ttl_seconds);
    let inactive_ttl = seconds("inactive_ttl_seconds", c.inactive_ttl_seconds);
    if c.capacity == 0 {
        let at = d.key(&["cache", "capacity"]);
        d.error(at, "cache.capacity must be above 0");
    }
    CacheConfig { max_ttl, inactive_ttl, capacity: c.capacity }
}
