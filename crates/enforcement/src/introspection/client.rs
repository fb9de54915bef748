//! The RFC 7662 client: where the endpoints are (given, or from the issuer's discovery
//! document), how the gateway authenticates (five methods), and reading the answer,
//! plain JSON or an RFC 9701 signed JWT.
//!
//! No call is retried, except once after a 401 when the credential was a bearer token
//! that may have expired (the server refused it, so nothing was introspected).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

use super::http::{read_body, read_json, transport_error};
use super::signed::SignedResponses;
use super::{AuthorizationServerConfig, ClientAuth};
use super::{IntrospectionError, Introspector, TokenInfo};
use crate::introspection::unix_now;

const SIGNED_TYPE: &str = "application/token-introspection+jwt";

/// Endpoints as configured or discovered.
#[derive(Debug, Clone)]
struct Endpoints {
    introspection: String,
    token: Option<String>,
    jwks_uri: Option<String>,
}

/// Signs RFC 7523 client assertions for `private_key_jwt`.
struct AssertionSigner {
    key: EncodingKey,
    alg: Algorithm,
    key_id: Option<String>,
}

pub struct HttpIntrospector {
    client: reqwest::Client,
    config: AuthorizationServerConfig,
    endpoints: OnceCell<Endpoints>,
    signer: Option<AssertionSigner>,
    bearer: Mutex<Option<(String, Instant)>>,
    signed: OnceCell<SignedResponses>,
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
        let mut signer = None;
        match &config.client_auth {
            ClientAuth::TlsClientAuth { certificate, private_key } => {
                let mut pem =
                    std::fs::read(certificate).map_err(|e| format!("cannot read {}: {e}", certificate.display()))?;
                pem.extend(
                    std::fs::read(private_key).map_err(|e| format!("cannot read {}: {e}", private_key.display()))?,
                );
                let identity = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("{}: not a usable client certificate and key: {e}", certificate.display()))?;
                builder = builder.identity(identity);
            }
            ClientAuth::PrivateKeyJwt { private_key, alg, key_id } => {
                let pem =
                    std::fs::read(private_key).map_err(|e| format!("cannot read {}: {e}", private_key.display()))?;
                let (key, alg) = match alg.as_str() {
                    "ES256" => (EncodingKey::from_ec_pem(&pem), Algorithm::ES256),
                    "RS256" => (EncodingKey::from_rsa_pem(&pem), Algorithm::RS256),
                    "PS256" => (EncodingKey::from_rsa_pem(&pem), Algorithm::PS256),
                    other => return Err(format!("signing_alg {other} is not supported")),
                };
                let key =
                    key.map_err(|e| format!("{}: not a {} private key: {e}", private_key.display(), alg_name(alg)))?;
                signer = Some(AssertionSigner { key, alg, key_id: key_id.clone() });
            }
            _ => {}
        }
        let client = builder.build().map_err(|e| format!("cannot build the introspection client: {e}"))?;
        Ok(HttpIntrospector {
            client,
            config: config.clone(),
            endpoints: OnceCell::new(),
            signer,
            bearer: Mutex::new(None),
            signed: OnceCell::new(),
        })
    }

    /// The endpoints, discovering what was not configured (once; a failure is retried
    /// on the next call).
    async fn endpoints(&self) -> Result<&Endpoints, IntrospectionError> {
        self.endpoints.get_or_try_init(|| self.discover()).await
    }

    async fn discover(&self) -> Result<Endpoints, IntrospectionError> {
        let c = &self.config;
        let needs_token = matches!(c.client_auth, ClientAuth::Bearer { .. }) && c.token_endpoint.is_none();
        let needs_jwks = c.signed_responses && c.jwks_uri.is_none();
        let (Some(issuer), true) = (&c.issuer, c.introspection_endpoint.is_none() || needs_token || needs_jwks) else {
            let introspection = c
                .introspection_endpoint
                .clone()
                .ok_or_else(|| IntrospectionError::Discovery("no introspection endpoint".into()))?;
            return Ok(Endpoints { introspection, token: c.token_endpoint.clone(), jwks_uri: c.jwks_uri.clone() });
        };
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc: Value = read_json(self.client.get(&url).send().await)
            .await
            .map_err(|e| IntrospectionError::Discovery(format!("{url}: {e}")))?;
        if doc["issuer"].as_str().map(|s| s.trim_end_matches('/')) != Some(issuer.as_str()) {
            return Err(IntrospectionError::Discovery(format!("{url} names another issuer ({})", doc["issuer"])));
        }
        let mtls = matches!(c.client_auth, ClientAuth::TlsClientAuth { .. });
        let endpoint = |name: &str| {
            let alias = doc["mtls_endpoint_aliases"][name].as_str().filter(|_| mtls);
            alias.or(doc[name].as_str()).map(str::to_string)
        };
        let introspection = c
            .introspection_endpoint
            .clone()
            .or_else(|| endpoint("introspection_endpoint"))
            .ok_or_else(|| IntrospectionError::Discovery(format!("{url} has no introspection_endpoint")))?;
        let endpoints = Endpoints {
            introspection,
            token: c.token_endpoint.clone().or_else(|| endpoint("token_endpoint")),
            jwks_uri: c.jwks_uri.clone().or_else(|| doc["jwks_uri"].as_str().map(str::to_string)),
        };
        tracing::info!(server = %c.name, endpoint = %endpoints.introspection, "authorization server discovered");
        Ok(endpoints)
    }

    /// A client assertion for `aud` (RFC 7523 §3).
    fn assertion(&self, signer: &AssertionSigner, aud: &str) -> Result<String, IntrospectionError> {
        let now = unix_now();
        let claims = json!({
            "iss": self.config.client_id, "sub": self.config.client_id, "aud": aud,
            "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 60,
        });
        let mut header = Header::new(signer.alg);
        header.kid = signer.key_id.clone();
        jsonwebtoken::encode(&header, &claims, &signer.key)
            .map_err(|e| IntrospectionError::Unreachable(format!("cannot sign the client assertion: {e}")))
    }

    /// The bearer token for the `bearer` method: cached until shortly before it expires.
    async fn bearer_token(&self, endpoints: &Endpoints, fresh: bool) -> Result<String, IntrospectionError> {
        if !fresh {
            if let Some((token, until)) = self.bearer.lock().unwrap().as_ref() {
                if Instant::now() < *until {
                    return Ok(token.clone());
                }
            }
        }
        let ClientAuth::Bearer { secret, scope } = &self.config.client_auth else {
            unreachable!("only called for the bearer method")
        };
        let url = endpoints.token.as_ref().ok_or_else(|| IntrospectionError::Discovery("no token endpoint".into()))?;
        let sent = self
            .client
            .post(url)
            .basic_auth(&self.config.client_id, Some(secret))
            .form(&[("grant_type", "client_credentials"), ("scope", scope.as_str())])
            .send()
            .await;
        let body: Value = read_json(sent).await?;
        let token = body["access_token"]
            .as_str()
            .ok_or(IntrospectionError::Malformed("token response has no access_token"))?
            .to_string();
        let lifetime = body["expires_in"].as_u64().unwrap_or(60);
        // Renew before expiry: a margin of 30 s, or a fifth of a short lifetime.
        let margin = (lifetime / 5).min(30);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(margin).max(1));
        *self.bearer.lock().unwrap() = Some((token.clone(), until));
        Ok(token)
    }

    async fn send(
        &self,
        endpoints: &Endpoints,
        token: &str,
        fresh_bearer: bool,
    ) -> Result<reqwest::Response, IntrospectionError> {
        let c = &self.config;
        let mut form: Vec<(&str, String)> =
            vec![("token", token.to_string()), ("token_type_hint", "access_token".into())];
        let mut request = self.client.post(&endpoints.introspection);
        match &c.client_auth {
            ClientAuth::SecretBasic { secret } => request = request.basic_auth(&c.client_id, Some(secret)),
            ClientAuth::SecretPost { secret } => {
                form.push(("client_id", c.client_id.clone()));
                form.push(("client_secret", secret.clone()));
            }
            ClientAuth::PrivateKeyJwt { .. } => {
                let signer = self.signer.as_ref().expect("built with the method");
                let aud = c.issuer.clone().unwrap_or_else(|| endpoints.introspection.clone());
                form.push(("client_id", c.client_id.clone()));
                form.push(("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
                form.push(("client_assertion", self.assertion(signer, &aud)?));
            }
            ClientAuth::TlsClientAuth { .. } => form.push(("client_id", c.client_id.clone())),
            ClientAuth::Bearer { .. } => {
                request = request.bearer_auth(self.bearer_token(endpoints, fresh_bearer).await?)
            }
        }
        let accept = if c.signed_responses { SIGNED_TYPE } else { "application/json" };
        request.header("accept", accept).form(&form).send().await.map_err(transport_error)
    }

    async fn signed(&self, endpoints: &Endpoints) -> Result<&SignedResponses, IntrospectionError> {
        self.signed
            .get_or_try_init(|| async {
                let jwks_uri =
                    endpoints.jwks_uri.clone().ok_or_else(|| IntrospectionError::Discovery("no jwks_uri".into()))?;
                let issuer =
                    self.config.issuer.clone().ok_or_else(|| IntrospectionError::Discovery("no issuer".into()))?;
                Ok(SignedResponses::new(jwks_uri, issuer, self.config.client_id.clone()))
            })
            .await
    }
}

#[async_trait]
impl Introspector for HttpIntrospector {
    async fn introspect(&self, token: &str) -> Result<TokenInfo, IntrospectionError> {
        let endpoints = self.endpoints().await?;
        let mut response = self.send(endpoints, token, false).await?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && matches!(self.config.client_auth, ClientAuth::Bearer { .. })
        {
            response = self.send(endpoints, token, true).await?;
        }
        if response.status() != reqwest::StatusCode::OK {
            return Err(IntrospectionError::Status(response.status().as_u16()));
        }
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let body = read_body(response).await?;
        let value = if self.config.signed_responses {
            if !content_type.starts_with(SIGNED_TYPE) {
                return Err(IntrospectionError::BadSignature(format!("expected {SIGNED_TYPE}, got `{content_type}`")));
            }
            let jwt = std::str::from_utf8(&body).map_err(|_| IntrospectionError::Malformed("not UTF-8"))?.trim();
            self.signed(endpoints).await?.verify(&self.client, jwt).await?
        } else {
            crate::strict_json::parse(&body)
                .map_err(|_| IntrospectionError::Malformed("not JSON, or a member named twice"))?
        };
        if !value.is_object() {
            return Err(IntrospectionError::Malformed("not a JSON object"));
        }
        TokenInfo::from_response(value)
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256 (P-256)",
        Algorithm::PS256 => "PS256 (RSA)",
        _ => "RS256 (RSA)",
    }
}
