//! RFC 7662 token introspection at the authorization server.
//!
//! [`TokenInfo`] is what the gateway keeps of an introspection response; the
//! [`Introspector`] trait is how the [cache](crate::cache) asks for one, so the cache and
//! the policy can be tested without a network. [`HttpIntrospector`] is the real client
//! (discovery, client authentication, RFC 9701 signed responses).

mod client;
mod signed;

pub use client::HttpIntrospector;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;

use crate::policy::claims::Claim;

/// The parts of an introspection response the gateway decides on. The whole response is
/// kept in `claims` for the policy's consent claim paths.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub active: bool,
    /// Seconds since the epoch.
    pub exp: Option<u64>,
    pub scopes: Vec<String>,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    /// RFC 8705 `cnf.x5t#S256`: base64url SHA-256 of the bound certificate.
    pub certificate_thumbprint: Option<String>,
    /// RFC 9449 `cnf.jkt`: thumbprint of the bound DPoP key.
    pub dpop_thumbprint: Option<String>,
    /// The whole response, compact (see [`Claim`]).
    pub claims: Claim,
}

impl TokenInfo {
    /// An inactive token: RFC 7662 says nothing else in such a response counts.
    pub fn inactive() -> TokenInfo {
        TokenInfo {
            active: false,
            exp: None,
            scopes: Vec::new(),
            client_id: None,
            subject: None,
            certificate_thumbprint: None,
            dpop_thumbprint: None,
            claims: Claim::Null,
        }
    }

    /// Reads an RFC 7662 §2.2 response. `active` must be a JSON boolean; anything else
    /// means the server's answer cannot be trusted.
    pub fn from_response(body: Value) -> Result<TokenInfo, IntrospectionError> {
        let active = match body.get("active") {
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(IntrospectionError::Malformed("`active` is not a boolean")),
            None => return Err(IntrospectionError::Malformed("`active` is missing")),
        };
        if !active {
            return Ok(TokenInfo::inactive());
        }
        let exp = match body.get("exp") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or(IntrospectionError::Malformed("`exp` is not a number"))?),
        };
        let scopes = match body.get("scope") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            Some(_) => return Err(IntrospectionError::Malformed("`scope` is not a string")),
        };
        let string = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_string);
        let certificate_thumbprint =
            body.get("cnf").and_then(|c| c.get("x5t#S256")).and_then(Value::as_str).map(str::to_string);
        let dpop_thumbprint = body.get("cnf").and_then(|c| c.get("jkt")).and_then(Value::as_str).map(str::to_string);
        Ok(TokenInfo {
            active,
            exp,
            scopes,
            client_id: string("client_id"),
            subject: string("sub"),
            certificate_thumbprint,
            dpop_thumbprint,
            claims: Claim::from(&body),
        })
    }

    /// Whether `exp` has passed at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: u64) -> bool {
        self.exp.is_some_and(|exp| exp <= now)
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Why the authorization server's answer could not be had or trusted. Every kind fails
/// closed: the request is answered 503 and nothing is forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionError {
    #[error("authorization server unreachable: {0}")]
    Unreachable(String),
    #[error("authorization server timed out")]
    Timeout,
    #[error("authorization server answered HTTP {0}")]
    Status(u16),
    #[error("introspection response too large")]
    TooLarge,
    #[error("introspection response malformed: {0}")]
    Malformed(&'static str),
    #[error("circuit open: the authorization server failed repeatedly")]
    CircuitOpen,
    #[error("too many introspection calls in flight")]
    Overloaded,
    #[error("signed introspection response rejected: {0}")]
    BadSignature(String),
    #[error("authorization server discovery failed: {0}")]
    Discovery(String),
}

impl IntrospectionError {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            IntrospectionError::Unreachable(_) => "unreachable",
            IntrospectionError::Timeout => "timeout",
            IntrospectionError::Status(_) => "status",
            IntrospectionError::TooLarge => "too_large",
            IntrospectionError::Malformed(_) => "malformed",
            IntrospectionError::CircuitOpen => "circuit_open",
            IntrospectionError::Overloaded => "overloaded",
            IntrospectionError::BadSignature(_) => "bad_signature",
            IntrospectionError::Discovery(_) => "discovery",
        }
    }
}

/// Asks an authorization server about a token.
#[async_trait]
pub trait Introspector: Send + Sync {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_active_response() {
        let info = TokenInfo::from_response(json!({
            "active": true, "exp": 100, "scope": "openid accounts", "client_id": "c", "sub": "alice",
            "cnf": {"x5t#S256": "abc"}, "ConsentId": "k"
        }))
        .unwrap();
        assert!(info.active);
        assert_eq!(info.scopes, vec!["openid", "accounts"]);
        assert_eq!(info.certificate_thumbprint.as_deref(), Some("abc"));
        assert!(info.expired_at(100));
        assert!(!info.expired_at(99));
        assert_eq!(info.claims.to_value()["ConsentId"], "k");
    }

    #[test]
    fn inactive_ignores_everything_else() {
        let info = TokenInfo::from_response(json!({"active": false, "scope": "accounts"})).unwrap();
        assert_eq!(info, TokenInfo::inactive());
    }

    #[test]
    fn malformed_responses_are_errors() {
        for body in [
            json!({}),
            json!({"active": "true"}),
            json!({"active": 1}),
            json!({"active": true, "exp": "x"}),
            json!({"active": true, "scope": ["a"]}),
        ] {
            assert!(matches!(TokenInfo::from_response(body), Err(IntrospectionError::Malformed(_))));
        }
    }
}
