//! `private_key_jwt` (RFC 7523 §2.2): a client assertion signed with the gateway's key.

use std::path::Path;

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{CallContext, ClientAuthMethod};
use crate::introspection::{unix_now, IntrospectionError, SigningAlg};

pub(super) struct PrivateKeyJwt {
    key: EncodingKey,
    alg: Algorithm,
    key_id: Option<String>,
}

impl PrivateKeyJwt {
    pub fn load(private_key: &Path, alg: SigningAlg, key_id: Option<String>) -> Result<PrivateKeyJwt, String> {
        let pem = std::fs::read(private_key).map_err(|e| format!("cannot read {}: {e}", private_key.display()))?;
        let (key, alg, kind) = match alg {
            SigningAlg::ES256 => (EncodingKey::from_ec_pem(&pem), Algorithm::ES256, "ES256 (P-256)"),
            SigningAlg::RS256 => (EncodingKey::from_rsa_pem(&pem), Algorithm::RS256, "RS256 (RSA)"),
            SigningAlg::PS256 => (EncodingKey::from_rsa_pem(&pem), Algorithm::PS256, "PS256 (RSA)"),
        };
        let key = key.map_err(|e| format!("{}: not a {kind} private key: {e}", private_key.display()))?;
        Ok(PrivateKeyJwt { key, alg, key_id })
    }

    /// A client assertion for `aud` (RFC 7523 §3), valid for a minute.
    fn assertion(&self, client_id: &str, aud: &str) -> Result<String, IntrospectionError> {
        let now = unix_now();
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": aud,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
        });
        let mut header = Header::new(self.alg);
        header.kid = self.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| IntrospectionError::Unreachable(format!("cannot sign the client assertion: {e}")))
    }
}

#[async_trait]
impl ClientAuthMethod for PrivateKeyJwt {
    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        _fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError> {
        // The assertion's audience is the issuer, else the endpoint called.
        let aud = call.issuer.unwrap_or(call.endpoint);
        form.push(("client_id", call.client_id.to_string()));
        form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
        form.push(("client_assertion", self.assertion(call.client_id, aud)?));
        Ok(request)
    }
}
