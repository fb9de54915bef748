//! What a revocation names, whatever announced it: the admin endpoint, a Security Event
//! Token, the fleet's revocation feed, or an introspection that found a consent revoked.
//!
//! One value for every source, so each source only translates into it and every consumer
//! (the local caches, the feed to other replicas) handles one shape.

use crate::cache::TokenKey;

/// What is no longer valid.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revoked {
    /// Every token of a consent (Open Banking `consent-authorization-revoked`, admin
    /// `consent_id`).
    Consent(String),
    /// One token, by its cache key at the revocation's server: the token itself never
    /// travels between replicas.
    Token(TokenKey),
    /// Every token issued for a subject (CAEP `session-revoked` or `credential-change`
    /// naming a subject).
    Subject(String),
}

/// A revocation: what is revoked, and at which authorization server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Revocation {
    /// The authorization server (its name in gateway.toml) whose cache it concerns; `None`
    /// for every server's. Always set for [`Revoked::Token`], whose key depends on it.
    pub server: Option<String>,
    /// What is revoked.
    pub revoked: Revoked,
}
