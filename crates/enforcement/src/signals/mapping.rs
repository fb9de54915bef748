//! Event types of a transmitter's own, mapped in the configuration to what they revoke:
//!
//! ```toml
//! [[signals.transmitters.events]]
//! type = "https://consents.bank.example/events/consent-withdrawn"
//! revokes = "consent"            # or "subject", or "token"
//! claim = "consent.id"           # a claim path in the event's payload
//! # set_claim = "sub"            # or a claim path in the SET's own claims
//! ```
//!
//! A mapping for a standard event type replaces the built-in reading of it.

use serde_json::Value;

use super::Target;
use crate::policy::ClaimPath;

/// What a mapped event revokes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappedKind {
    /// Every token of the consent whose id is at the path.
    Consent,
    /// Every token whose `sub` is at the path.
    Subject,
    /// The access token at the path.
    Token,
}

/// Where the id a mapped event names is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdPath {
    /// In the event's payload.
    Event(ClaimPath),
    /// In the SET's own claims.
    Set(ClaimPath),
}

/// One configured event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMapping {
    /// The event type (a key of the SET's `events`).
    pub event_type: String,
    /// What it revokes.
    pub revokes: MappedKind,
    /// Where the consent id, subject or token is.
    pub id: IdPath,
}

impl EventMapping {
    /// What the event revokes, read from its `payload` or the SET's `claims`.
    pub fn target(&self, payload: &Value, claims: &Value) -> Result<Target, String> {
        let (root, path, place) = match &self.id {
            IdPath::Event(p) => (payload, p, "event payload"),
            IdPath::Set(p) => (claims, p, "SET"),
        };
        let id = path
            .string(root)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("event `{}`: no string at `{}` in the {place}", self.event_type, path.as_str()))?
            .to_string();
        Ok(match self.revokes {
            MappedKind::Consent => Target::Consent(id),
            MappedKind::Subject => Target::Subject(id),
            MappedKind::Token => Target::Token(id),
        })
    }
}
