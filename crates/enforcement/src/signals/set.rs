//! RFC 8417 Security Event Token verification: a compact JWS signed with an asymmetric
//! algorithm by a key of the transmitter's JWKS, `typ` `secevent+jwt` when present, `iss`
//! (chosen before), `aud`, a fresh `iat`, a `jti`, and an `events` object. No `exp` is
//! needed (RFC 8417 has none); one given and past refuses the SET.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::jwks::{KeyError, Keys};
use super::{invalid_request, ErrorCode, SignalError, TransmitterConfig};
use crate::introspection::unix_now;

/// Tolerated clock skew for `iat` from the future, in seconds.
pub const SKEW: u64 = 60;

/// The asymmetric algorithms accepted (RFC 8725 §3.1: never `none`, never a shared secret).
pub const ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

fn invalid_key(description: impl Into<String>) -> SignalError {
    SignalError::refused(ErrorCode::InvalidKey, description)
}

/// The claims of a compact JWS, before its signature is checked (to find its transmitter
/// by `iss`). Duplicate members are refused, as everywhere a decision reads JSON.
pub fn unverified_claims(jwt: &str) -> Result<Value, SignalError> {
    if jwt.split('.').count() != 3 {
        return Err(invalid_request("the body is not a compact JWS (three base64url parts)"));
    }
    let claims = crate::strict_json::jws_payload(jwt).map_err(|e| invalid_request(format!("the SET's claims: {e}")))?;
    if !claims.is_object() {
        return Err(invalid_request("the SET's claims are not a JSON object"));
    }
    Ok(claims)
}

/// Verifies `jwt` as a SET from `transmitter`; its claims.
pub(super) async fn verify(
    jwt: &str,
    transmitter: &TransmitterConfig,
    keys: &Keys,
    max_age: Duration,
) -> Result<Value, SignalError> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| invalid_request(format!("malformed JWS header: {e}")))?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(invalid_key(format!("alg {:?} is not an asymmetric signature algorithm", header.alg)));
    }
    if let Some(typ) = &header.typ {
        let typ = typ.to_ascii_lowercase();
        if typ != "secevent+jwt" && typ != "application/secevent+jwt" {
            return Err(invalid_request(format!("typ is `{typ}`, not secevent+jwt (RFC 8417 §2.3)")));
        }
    }
    let jwk = match keys.find(header.kid.as_deref()).await {
        Ok(jwk) => jwk,
        Err(KeyError::Unknown(m)) => return Err(invalid_key(m)),
        Err(KeyError::Unavailable(m)) => return Err(SignalError::KeysUnavailable(m)),
    };
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != jsonwebtoken::jwk::PublicKeyUse::Signature) {
        return Err(invalid_key(format!("key {:?} is not a signing key (`use`)", header.kid)));
    }
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err(invalid_key(format!("key {:?} is for {alg:?}, not {:?}", header.kid, header.alg)));
        }
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| invalid_key(format!("unusable key: {e}")))?;
    let mut validation = Validation::new(header.alg);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|e| invalid_key(format!("signature not verified by key {:?}: {e}", header.kid)))?
        .claims;
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => *a == transmitter.audience,
        Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(transmitter.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(SignalError::refused(
            ErrorCode::InvalidAudience,
            format!("aud does not name this receiver (`{}`)", transmitter.audience),
        ));
    }
    let now = unix_now();
    match claims.get("iat").and_then(Value::as_u64) {
        None => return Err(invalid_request("iat is missing or not a number")),
        Some(iat) if iat > now + SKEW => return Err(invalid_request("iat is in the future")),
        Some(iat) if now.saturating_sub(iat) > max_age.as_secs() => {
            return Err(invalid_request(format!(
                "iat is {} s old; SETs older than {} s are refused (their jti may no longer be remembered)",
                now - iat,
                max_age.as_secs()
            )))
        }
        Some(_) => {}
    }
    if let Some(exp) = claims.get("exp") {
        if exp.as_u64().is_none_or(|exp| exp + SKEW <= now) {
            return Err(invalid_request("exp has passed"));
        }
    }
    match claims.get("jti").and_then(Value::as_str) {
        Some(jti) if !jti.is_empty() && jti.len() <= 256 => {}
        _ => return Err(invalid_request("jti is missing, empty or longer than 256 characters")),
    }
    Ok(claims)
}
