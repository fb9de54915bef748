//! The RFC 7662 client: where the endpoints are (given, or from the issuer's discovery
//! document), how the gateway authenticates (one of the methods in
//! [`client_auth`](super::client_auth)), and reading the answer, plain JSON or an RFC 9701
//! signed JWT.
//!
//! No call is retried, except once after a 401 when the credential was a bearer token
//! that may have expired (the server refused it, so nothing was introspected).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::OnceCell;

use super::client_auth::{self, CallContext, ClientAuthMethod};
use super::http::{read_body, read_json, transport_error};
use super::signed::SignedResponses;
use super::AuthorizationServerConfig;
use super::{IntrospectionError, Introspector, TokenInfo};
use crate::error::StartError;

const SIGNED_TYPE: &str = "application/token-introspection+jwt";

/// Endpoints as configured or discovered.
#[derive(Debug, Clone)]
struct Endpoints {
    introspection: String,
    /// `introspection`, parsed once: reqwest would parse the text again on every call.
    introspection_url: reqwest::Url,
    token: Option<String>,
    jwks_uri: Option<String>,
}

/// Introspects tokens at one authorization server over HTTP(S).
pub struct HttpIntrospector {
    client: reqwest::Client,
    config: AuthorizationServerConfig,
    endpoints: OnceCell<Endpoints>,
    auth: Box<dyn ClientAuthMethod>,
    signed: OnceCell<SignedResponses>,
}

impl HttpIntrospector {
    /// A client for `config`'s server (nothing is called before the first introspection).
    pub fn new(config: &AuthorizationServerConfig) -> Result<HttpIntrospector, StartError> {
        Self::build(config).map_err(|reason| StartError::AuthorizationServer { server: config.name.clone(), reason })
    }

    fn build(config: &AuthorizationServerConfig) -> Result<HttpIntrospector, String> {
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
        let auth = client_auth::for_config(&config.client_auth)?;
        let builder = auth.configure(builder)?;
        let client = builder.build().map_err(|e| format!("cannot build the introspection client: {e}"))?;
        Ok(HttpIntrospector {
            client,
            config: config.clone(),
            endpoints: OnceCell::new(),
            auth,
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
        let needs_token = self.auth.renews_on_unauthorized() && c.token_endpoint.is_none();
        let needs_jwks = c.signed_responses && c.jwks_uri.is_none();
        let (Some(issuer), true) = (&c.issuer, c.introspection_endpoint.is_none() || needs_token || needs_jwks) else {
            let introspection = c
                .introspection_endpoint
                .clone()
                .ok_or_else(|| IntrospectionError::Discovery("no introspection endpoint".into()))?;
            let introspection_url = parse_endpoint(&introspection)?;
            return Ok(Endpoints {
                introspection,
                introspection_url,
                token: c.token_endpoint.clone(),
                jwks_uri: c.jwks_uri.clone(),
            });
        };
        let url = format!("{issuer}/.well-known/openid-configuration");
        let doc: Value = read_json(self.client.get(&url).send().await)
            .await
            .map_err(|e| IntrospectionError::Discovery(format!("{url}: {e}")))?;
        if doc["issuer"].as_str().map(|s| s.trim_end_matches('/')) != Some(issuer.as_str()) {
            return Err(IntrospectionError::Discovery(format!("{url} names another issuer ({})", doc["issuer"])));
        }
        let mtls = self.auth.uses_client_certificate();
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
            introspection_url: parse_endpoint(&introspection)?,
            introspection,
            token: c.token_endpoint.clone().or_else(|| endpoint("token_endpoint")),
            jwks_uri: c.jwks_uri.clone().or_else(|| doc["jwks_uri"].as_str().map(str::to_string)),
        };
        tracing::info!(server = %c.name, endpoint = %endpoints.introspection, "authorization server discovered");
        Ok(endpoints)
    }

    async fn send(
        &self,
        endpoints: &Endpoints,
        token: &str,
        fresh_bearer: bool,
    ) -> Result<reqwest::Response, IntrospectionError> {
        let c = &self.config;
        let mut form: Vec<(&'static str, String)> =
            vec![("token", token.to_string()), ("token_type_hint", "access_token".into())];
        let call = CallContext {
            client: &self.client,
            client_id: &c.client_id,
            issuer: c.issuer.as_deref(),
            endpoint: &endpoints.introspection,
            token_endpoint: endpoints.token.as_deref(),
        };
        let request = self
            .auth
            .authenticate(&call, self.client.post(endpoints.introspection_url.clone()), &mut form, fresh_bearer)
            .await?;
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
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && self.auth.renews_on_unauthorized() {
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

/// The introspection endpoint as a URL (configured ones were validated at load; a
/// discovered one may still be malformed).
fn parse_endpoint(endpoint: &str) -> Result<reqwest::Url, IntrospectionError> {
    reqwest::Url::parse(endpoint)
        .map_err(|e| IntrospectionError::Discovery(format!("introspection endpoint `{endpoint}`: {e}")))
}
