//! RFC 9701: introspection responses as JWTs signed by the authorization server.
//! The signature is checked against the server's JWKS (cached; fetched again, at most
//! every few seconds, when a `kid` is unknown), then `typ`, `iss`, `aud` and `iat`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::http::read_json;
use super::{unix_now, IntrospectionError};

/// Least time between two JWKS fetches for unknown keys (a flood of bad `kid`s must not
/// become a flood of fetches).
const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Tolerated clock skew for `iat`.
const SKEW: u64 = 60;

pub struct SignedResponses {
    jwks_uri: String,
    issuer: String,
    audience: String,
    keys: Mutex<(Option<JwkSet>, Option<Instant>)>,
}

fn bad(m: impl Into<String>) -> IntrospectionError {
    IntrospectionError::BadSignature(m.into())
}

impl SignedResponses {
    pub fn new(jwks_uri: String, issuer: String, audience: String) -> SignedResponses {
        SignedResponses { jwks_uri, issuer, audience, keys: Mutex::new((None, None)) }
    }

    async fn key(
        &self,
        client: &reqwest::Client,
        kid: Option<&str>,
    ) -> Result<jsonwebtoken::jwk::Jwk, IntrospectionError> {
        let find = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let may_fetch = {
            let keys = self.keys.lock().unwrap();
            if let Some(found) = keys.0.as_ref().and_then(find) {
                return Ok(found);
            }
            keys.1.is_none_or(|t| t.elapsed() >= REFETCH_AFTER)
        };
        if !may_fetch {
            return Err(bad(format!("unknown key {kid:?}")));
        }
        let value = read_json(client.get(&self.jwks_uri).send().await).await?;
        let set: JwkSet =
            serde_json::from_value(value).map_err(|_| IntrospectionError::Malformed("JWKS is not a key set"))?;
        let found = find(&set);
        *self.keys.lock().unwrap() = (Some(set), Some(Instant::now()));
        found.ok_or_else(|| bad(format!("unknown key {kid:?}")))
    }

    /// The RFC 7662 body inside a verified signed response.
    pub async fn verify(&self, client: &reqwest::Client, jwt: &str) -> Result<Value, IntrospectionError> {
        let header = jsonwebtoken::decode_header(jwt).map_err(|e| bad(format!("malformed JWT: {e}")))?;
        let typ = header.typ.as_deref().unwrap_or("").to_ascii_lowercase();
        if typ != "token-introspection+jwt" && typ != "application/token-introspection+jwt" {
            return Err(bad(format!("typ is `{typ}`, not token-introspection+jwt")));
        }
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::EdDSA
        ) {
            return Err(bad(format!("alg {:?} is not an asymmetric signature", header.alg)));
        }
        let jwk = self.key(client, header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("unusable key: {e}")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.validate_exp = false;
        validation.required_spec_claims = ["iss", "aud"].iter().map(|s| s.to_string()).collect();
        jsonwebtoken::decode::<Value>(jwt, &key, &validation).map_err(|e| bad(e.to_string()))?;
        let claims = crate::strict_json::jws_payload(jwt).map_err(|e| bad(format!("claims: {e}")))?;
        match claims["iat"].as_u64() {
            Some(iat) if iat <= unix_now() + SKEW => {}
            _ => return Err(bad("iat missing or in the future")),
        }
        match claims.get("token_introspection") {
            Some(body @ Value::Object(_)) => Ok(body.clone()),
            _ => Err(bad("no token_introspection member")),
        }
    }
}
