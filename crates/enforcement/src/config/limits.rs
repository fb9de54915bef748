//! `[limits]`: what a client may send.

use super::file::LimitsSection;

/// Limits on what a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Request headers at most (more is 431).
    pub max_header_count: usize,
    /// Bytes of request headers at most (more is 431).
    pub max_header_bytes: usize,
    /// For bodies the gateway only forwards (routes that read theirs have `max_body_bytes`).
    pub max_body_bytes: u64,
}

pub(super) fn validate(l: &LimitsSection) -> Limits {
    Limits {
        max_header_count: l.max_header_count.max(1),
        max_header_bytes: l.max_header_bytes.max(1),
        max_body_bytes: l.max_body_bytes,
    }
}
