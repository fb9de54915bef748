//! How the gateway authenticates to an authorization server: one file per method of
//! RFC 7662 §2.1 / OAuth client authentication, behind [`ClientAuthMethod`].
//! [`for_config`] is the one place that maps a configured [`ClientAuth`] to its method.

mod bearer;
mod private_key_jwt;
mod secret;
mod tls_client_auth;

use async_trait::async_trait;

use super::{ClientAuth, IntrospectionError};

/// What a method may use to authenticate one call.
pub(crate) struct CallContext<'a> {
    /// The HTTP client (the bearer method calls the token endpoint with it).
    pub client: &'a reqwest::Client,
    pub client_id: &'a str,
    pub issuer: Option<&'a str>,
    /// The endpoint being called.
    pub endpoint: &'a str,
    pub token_endpoint: Option<&'a str>,
}

/// One client authentication method.
#[async_trait]
pub(crate) trait ClientAuthMethod: Send + Sync {
    /// Sets up the HTTP client once (a client certificate for `tls_client_auth`).
    fn configure(&self, builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder, String> {
        Ok(builder)
    }

    /// Authenticates one call: sets headers on `request` or adds form fields. `fresh` asks
    /// for new credentials where they can go stale (a bearer token refused with 401).
    async fn authenticate(
        &self,
        call: &CallContext<'_>,
        request: reqwest::RequestBuilder,
        form: &mut Vec<(&'static str, String)>,
        fresh: bool,
    ) -> Result<reqwest::RequestBuilder, IntrospectionError>;

    /// Whether a 401 may be cured by calling again with fresh credentials.
    fn renews_on_unauthorized(&self) -> bool {
        false
    }

    /// Whether the server's RFC 8705 `mtls_endpoint_aliases` apply.
    fn uses_client_certificate(&self) -> bool {
        false
    }
}

/// The method of a configured client authentication.
pub(crate) fn for_config(auth: &ClientAuth) -> Result<Box<dyn ClientAuthMethod>, String> {
    Ok(match auth {
        ClientAuth::SecretBasic { secret } => Box::new(secret::Basic { secret: secret.clone() }),
        ClientAuth::SecretPost { secret } => Box::new(secret::Post { secret: secret.clone() }),
        ClientAuth::PrivateKeyJwt { private_key, alg, key_id } => {
            Box::new(private_key_jwt::PrivateKeyJwt::load(private_key, *alg, key_id.clone())?)
        }
        ClientAuth::TlsClientAuth { certificate, private_key } => Box::new(tls_client_auth::TlsClientAuth {
            certificate: certificate.clone(),
            private_key: private_key.clone(),
        }),
        ClientAuth::Bearer { secret, scope } => Box::new(bearer::Bearer::new(secret.clone(), scope.clone())),
    })
}
