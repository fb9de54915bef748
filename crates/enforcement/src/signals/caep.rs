//! OpenID CAEP 1.0 `session-revoked` and `credential-change`: every token of the subject
//! (or one token) is revoked.
//!
//! The subject is the event's `subject` member (CAEP drafts) or the SET's `sub_id` claim
//! (SSF 1.0), an RFC 9493 subject identifier:
//! - `iss_sub`: the tokens whose introspected `sub` is its `sub`;
//! - `opaque`: per the transmitter's `opaque_subjects`, the tokens of that `sub`
//!   (default), or the access token itself (`token`: an opaque token is its own
//!   identifier, as in RFC 7009);
//! - a complex subject (SSF §3.3): its `user` member, read as above.
//!
//! Other formats (`email`, `phone_number`, `account`, `did`, `uri`, `aliases`, `jwt_id`,
//! `saml_assertion_id`) are refused: introspection does not report them, so the gateway
//! cannot tell which cached tokens they name (and never keeps a token's `jti`).

use serde_json::Value;

use super::{OpaqueSubjects, Target};

/// CAEP session revoked.
pub const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
/// CAEP credential change (any `change_type`: a changed, revoked or deleted credential
/// ends the sessions it opened, as far as the gateway's cache is concerned).
pub const CREDENTIAL_CHANGE: &str = "https://schemas.openid.net/secevent/caep/event-type/credential-change";
/// The CAEP events understood.
pub const EVENTS: [&str; 2] = [SESSION_REVOKED, CREDENTIAL_CHANGE];

/// What a CAEP event revokes.
pub fn target(payload: &Value, claims: &Value, opaque: OpaqueSubjects) -> Result<Target, String> {
    let subject = payload
        .get("subject")
        .or_else(|| claims.get("sub_id"))
        .ok_or("no subject: neither the event's `subject` nor the SET's `sub_id`")?;
    of_identifier(subject, opaque, 0)
}

fn of_identifier(subject: &Value, opaque: OpaqueSubjects, depth: u8) -> Result<Target, String> {
    let text = |name: &str| match subject.get(name).and_then(Value::as_str) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(format!("the subject has no `{name}` string")),
    };
    match subject.get("format").and_then(Value::as_str) {
        Some("iss_sub") => Ok(Target::Subject(text("sub")?)),
        Some("opaque") => {
            let id = text("id")?;
            Ok(match opaque {
                OpaqueSubjects::Subject => Target::Subject(id),
                OpaqueSubjects::Token => Target::Token(id),
            })
        }
        Some(other) => Err(format!(
            "subject format `{other}` cannot name cached tokens (use iss_sub, or opaque with the token's sub)"
        )),
        None if depth == 0 && subject.get("user").is_some() => of_identifier(&subject["user"], opaque, 1),
        None => Err("the subject has no `format` and no `user` member".into()),
    }
}
