//! Open Banking UK event notifications: `consent-authorization-revoked` revokes every
//! token of the consent.
//!
//! The consent id is the event subject's `http://openbanking.org.uk/rid`; when the event
//! is empty (the specification's funds-confirmation example sends it beside a
//! `resource-update` that carries the subject), the `rid` of another event of the SET, and
//! else the last path segment of the SET's `sub` (the consent resource's URL).

use serde_json::Value;

use super::Target;

/// The Open Banking consent revocation event.
pub const CONSENT_AUTHORIZATION_REVOKED: &str = "urn:uk:org:openbanking:events:consent-authorization-revoked";
/// The Open Banking resource update (informational: it revokes nothing by itself).
pub const RESOURCE_UPDATE: &str = "urn:uk:org:openbanking:events:resource-update";
/// The subject member holding the resource id.
const RID: &str = "http://openbanking.org.uk/rid";

fn rid(event: &Value) -> Option<&str> {
    event.get("subject")?.get(RID)?.as_str().filter(|s| !s.is_empty())
}

/// The consent a `consent-authorization-revoked` event revokes.
pub fn target(payload: &Value, claims: &Value) -> Result<Target, String> {
    if let Some(id) = rid(payload) {
        return Ok(Target::Consent(id.to_string()));
    }
    if payload.get("subject").is_some() {
        return Err(format!("the event's subject has no `{RID}` string"));
    }
    let others = claims.get("events").and_then(Value::as_object);
    if let Some(id) = others.into_iter().flat_map(|e| e.values()).find_map(rid) {
        return Ok(Target::Consent(id.to_string()));
    }
    let from_sub = claims
        .get("sub")
        .and_then(Value::as_str)
        .and_then(|s| s.split(['?', '#']).next())
        .and_then(|s| s.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty());
    from_sub
        .map(|id| Target::Consent(id.to_string()))
        .ok_or_else(|| format!("no consent id: no subject `{RID}` and no `sub`"))
}
