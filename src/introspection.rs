//! RFC 7662 token introspection at the authorization server.
//!
//! [`TokenInfo`] is what the gateway keeps of an introspection response; the
//! [`Introspector`] trait is how the [cache](crate::cache) asks for one, so the cache and
//! the policy can be tested without a network. [`HttpIntrospector`] is the real client.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde_json::Value;

use crate::config::AuthorizationServerConfig;

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
    pub claims: Value,
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
            claims: Value::Null,
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
        Ok(TokenInfo {
            active,
            exp,
            scopes,
            client_id: string("client_id"),
            subject: string("sub"),
            certificate_thumbprint,
            claims: body,
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
        }
    }
}

/// Asks an authorization server about a token.
#[async_trait]
pub trait Introspector: Send + Sync {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError>;
}

/// Largest introspection response accepted; real ones are a few kilobytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// RFC 7662 over HTTPS with `client_secret_basic`, pooled connections and a per-call timeout.
pub struct HttpIntrospector {
    client: reqwest::Client,
    endpoint: String,
    client_id: String,
    client_secret: String,
}

impl HttpIntrospector {
    pub fn new(config: &AuthorizationServerConfig) -> Result<HttpIntrospector, String> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(2)))
            .pool_idle_timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &config.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", ca.display()))?;
            builder = builder.tls_certs_only(certs);
        }
        let client = builder.build().map_err(|e| format!("cannot build the introspection client: {e}"))?;
        Ok(HttpIntrospector {
            client,
            endpoint: config.introspection_endpoint.clone(),
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
        })
    }
}

#[async_trait]
impl Introspector for HttpIntrospector {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError> {
        let sent = self
            .client
            .post(&self.endpoint)
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .header(http::header::ACCEPT, "application/json")
            .form(&[("token", token), ("token_type_hint", "access_token")])
            .send()
            .await;
        let mut response = sent.map_err(|e| {
            if e.is_timeout() {
                IntrospectionError::Timeout
            } else {
                IntrospectionError::Unreachable(error_chain(&e))
            }
        })?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(IntrospectionError::Status(response.status().as_u16()));
        }
        if response.content_length().is_some_and(|n| n as usize > MAX_RESPONSE_BYTES) {
            return Err(IntrospectionError::TooLarge);
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(IntrospectionError::TooLarge);
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) if e.is_timeout() => return Err(IntrospectionError::Timeout),
                Err(e) => return Err(IntrospectionError::Unreachable(error_chain(&e))),
            }
        }
        let value: Value = serde_json::from_slice(&body).map_err(|_| IntrospectionError::Malformed("not JSON"))?;
        if !value.is_object() {
            return Err(IntrospectionError::Malformed("not a JSON object"));
        }
        TokenInfo::from_response(value)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
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
        assert_eq!(info.claims["ConsentId"], "k");
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
