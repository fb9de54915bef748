//! RFC 7662 token introspection at the authorization server.
//!
//! [`TokenInfo`] is what the gateway keeps of an introspection response; the
//! [`Introspector`] trait is how the [cache](crate::cache) asks for one, so the cache and
//! the policy can be tested without a network. [`HttpIntrospector`] is the real client
//! (discovery, client authentication, RFC 9701 signed responses).

pub mod claims;
mod client;
mod client_auth;
mod http;
mod response;
mod settings;
mod signed;

pub use client::HttpIntrospector;
pub use settings::{AuthorizationServerConfig, ClientAuth, SigningAlg};

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;

use std::num::NonZeroU64;
use std::sync::Arc;

use claims::{empty_list, share, share_list, share_single, Claim};

/// The standard RFC 7662 (and RFC 8705/9449) members: the gateway reads the ones it needs
/// into [`TokenInfo`]'s fields and keeps none of them in `claims`, which policies'
/// claim paths address (`check` refuses a path starting with one of these).
pub const STANDARD_MEMBERS: [&str; 13] =
    ["active", "scope", "client_id", "username", "token_type", "exp", "iat", "nbf", "sub", "aud", "iss", "jti", "cnf"];

/// The parts of an introspection response the gateway decides on. Strings are shared
/// between cached tokens (see [`Claim`]): a cache of many tokens holds each client id,
/// subject, scope and thumbprint once.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    /// RFC 7662 `active`: whether the server holds the token valid; when `false`, every other
    /// field is empty.
    pub active: bool,
    /// Seconds since the epoch.
    /// Seconds since the epoch (a zero `exp`, long past, is kept as 1: still expired).
    pub exp: Option<NonZeroU64>,
    /// RFC 7662 `scope`, split at spaces.
    pub scopes: Arc<[Arc<str>]>,
    /// RFC 7662 `client_id`: the OAuth client the token was issued to.
    pub client_id: Option<Arc<str>>,
    /// RFC 7662 `sub`: whom the token is about, usually the customer who consented.
    pub subject: Option<Arc<str>>,
    /// RFC 8705 `cnf.x5t#S256`: base64url SHA-256 of the bound certificate.
    pub certificate_thumbprint: Option<Arc<str>>,
    /// RFC 9449 `cnf.jkt`: thumbprint of the bound DPoP key.
    pub dpop_thumbprint: Option<Arc<str>>,
    /// RFC 7662 `aud` (a string or an array of strings): whom the token is meant for.
    pub audiences: Arc<[Arc<str>]>,
    /// The extension claims (consent and the like), compact: every member but the standard ones.
    pub claims: Claim,
}

impl TokenInfo {
    /// An inactive token: RFC 7662 says nothing else in such a response counts.
    pub fn inactive() -> TokenInfo {
        TokenInfo {
            active: false,
            exp: None,
            scopes: empty_list(),
            client_id: None,
            subject: None,
            certificate_thumbprint: None,
            dpop_thumbprint: None,
            audiences: empty_list(),
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
            Some(v) => {
                let exp = v.as_u64().ok_or(IntrospectionError::Malformed("`exp` is not a number"))?;
                NonZeroU64::new(exp.max(1))
            }
        };
        let scopes: Arc<[Arc<str>]> = match body.get("scope") {
            None | Some(Value::Null) => empty_list(),
            Some(Value::String(s)) => share_list(s),
            Some(_) => return Err(IntrospectionError::Malformed("`scope` is not a string")),
        };
        let audiences: Arc<[Arc<str>]> = match body.get("aud") {
            None | Some(Value::Null) => empty_list(),
            Some(Value::String(s)) => share_single(s),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(share))
                .collect::<Option<_>>()
                .ok_or(IntrospectionError::Malformed("`aud` is not a string or an array of strings"))?,
            Some(_) => return Err(IntrospectionError::Malformed("`aud` is not a string or an array of strings")),
        };
        let string = |v: Option<&Value>| v.and_then(Value::as_str).map(share);
        let cnf = body.get("cnf");
        Ok(TokenInfo {
            active,
            exp,
            scopes,
            client_id: string(body.get("client_id")),
            subject: string(body.get("sub")),
            certificate_thumbprint: string(cnf.and_then(|c| c.get("x5t#S256"))),
            dpop_thumbprint: string(cnf.and_then(|c| c.get("jkt"))),
            audiences,
            claims: Claim::compact_except(&body, &STANDARD_MEMBERS),
        })
    }

    /// Whether `exp` has passed at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: u64) -> bool {
        self.exp.is_some_and(|exp| exp.get() <= now)
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
    /// No answer: connection, TLS or request failure (or the client assertion could not be
    /// signed); the text is the error chain.
    #[error("authorization server unreachable: {0}")]
    Unreachable(String),
    /// No answer within the server's `timeout`.
    #[error("authorization server timed out")]
    Timeout,
    /// An HTTP status other than 200.
    #[error("authorization server answered HTTP {0}")]
    Status(u16),
    /// A response body over 256 KiB.
    #[error("introspection response too large")]
    TooLarge,
    /// Not an RFC 7662 response (not a JSON object, `active` not a boolean, …); the text says
    /// what.
    #[error("introspection response malformed: {0}")]
    Malformed(&'static str),
    /// Not called: the server's circuit breaker is open after repeated failures.
    #[error("circuit open: the authorization server failed repeatedly")]
    CircuitOpen,
    /// Not called: every call slot to the server stayed busy for the whole `timeout`.
    #[error("too many introspection calls in flight")]
    Overloaded,
    /// A required RFC 9701 signed response was not one, or its signature, issuer or audience
    /// did not verify.
    #[error("signed introspection response rejected: {0}")]
    BadSignature(String),
    /// An endpoint is neither configured nor found in the issuer's discovery document (which
    /// may be unreachable or name another issuer).
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
    /// The server's RFC 7662 answer about `token`; an error refuses the request (fail
    /// closed).
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
        assert_eq!(info.scopes.iter().map(|s| &**s).collect::<Vec<_>>(), vec!["openid", "accounts"]);
        assert_eq!(info.certificate_thumbprint.as_deref(), Some("abc"));
        assert_eq!(info.claims.to_value(), json!({"ConsentId": "k"}), "standard members are fields, not claims");
        assert!(info.expired_at(100));
        assert!(!info.expired_at(99));
        assert_eq!(info.claims.to_value()["ConsentId"], "k");
        let one = TokenInfo::from_response(json!({"active": true, "aud": "https://api.gobank"})).unwrap();
        assert_eq!(one.audiences.iter().map(|s| &**s).collect::<Vec<_>>(), vec!["https://api.gobank"]);
        let many = TokenInfo::from_response(json!({"active": true, "aud": ["a", "b"]})).unwrap();
        assert_eq!(many.audiences.len(), 2);
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
            json!({"active": true, "aud": 7}),
            json!({"active": true, "aud": ["a", 7]}),
        ] {
            assert!(matches!(TokenInfo::from_response(body), Err(IntrospectionError::Malformed(_))));
        }
    }
}
