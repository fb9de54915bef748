//! How the gateway reaches and authenticates to an authorization server.

use std::fmt;

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How the gateway authenticates to an authorization server.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_secret_basic` (RFC 6749 §2.3.1): client id and secret in HTTP Basic.
    SecretBasic {
        /// The client secret.
        secret: String,
    },
    /// `client_secret_post` (RFC 6749 §2.3.1): client id and secret in the form body.
    SecretPost {
        /// The client secret.
        secret: String,
    },
    /// RFC 7523 client assertion signed with `private_key` (PEM), `alg` RS256, PS256 or ES256.
    PrivateKeyJwt {
        /// PEM file of the signing key.
        private_key: PathBuf,
        /// JWS algorithm of the assertion.
        alg: SigningAlg,
        /// `kid` of the assertion's header, for a server holding several of the client's keys.
        key_id: Option<String>,
    },
    /// RFC 8705: the gateway's own client certificate, at the server's mTLS endpoint.
    TlsClientAuth {
        /// PEM file of the gateway's client certificate chain.
        certificate: PathBuf,
        /// PEM file of its private key.
        private_key: PathBuf,
    },
    /// A bearer token obtained with client_credentials (`client_secret_basic`) at the token endpoint.
    Bearer {
        /// The client secret, for the client_credentials grant.
        secret: String,
        /// The scope asked for (by default `introspect_tokens`).
        scope: String,
    },
}

impl ClientAuth {
    /// The method's name as the configuration's `client_auth` gives it
    /// (`client_secret_basic`, …, `bearer`).
    pub fn method(&self) -> &'static str {
        match self {
            ClientAuth::SecretBasic { .. } => "client_secret_basic",
            ClientAuth::SecretPost { .. } => "client_secret_post",
            ClientAuth::PrivateKeyJwt { .. } => "private_key_jwt",
            ClientAuth::TlsClientAuth { .. } => "tls_client_auth",
            ClientAuth::Bearer { .. } => "bearer",
        }
    }
}

/// Secrets are shown as a short hash, so a changed secret is still seen as a change.
impl fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden = |s: &str| {
            use sha2::{Digest, Sha256};
            format!(
                "sha256:{}",
                Sha256::digest(s.as_bytes())[..6].iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        match self {
            ClientAuth::SecretBasic { secret } => write!(f, "client_secret_basic({})", hidden(secret)),
            ClientAuth::SecretPost { secret } => write!(f, "client_secret_post({})", hidden(secret)),
            ClientAuth::PrivateKeyJwt { private_key, alg, key_id } => {
                write!(f, "private_key_jwt({}, {alg:?}, {key_id:?})", private_key.display())
            }
            ClientAuth::TlsClientAuth { certificate, private_key } => {
                write!(f, "tls_client_auth({}, {})", certificate.display(), private_key.display())
            }
            ClientAuth::Bearer { secret, scope } => write!(f, "bearer({}, {scope})", hidden(secret)),
        }
    }
}

/// One authorization server the gateway introspects tokens at: where it is, how the gateway
/// authenticates, and how long and how often the gateway may wait on it.
#[derive(Debug, Clone)]
pub struct AuthorizationServerConfig {
    /// Names the server in policies, metrics and cache keys.
    pub name: String,
    /// Its issuer identifier; endpoints not configured come from its discovery document
    /// (`/.well-known/openid-configuration`).
    pub issuer: Option<String>,
    /// The RFC 7662 endpoint; `None`: discovered.
    pub introspection_endpoint: Option<String>,
    /// The token endpoint, for `bearer` client authentication; `None`: discovered.
    pub token_endpoint: Option<String>,
    /// The server's keys, for RFC 9701 signed responses; `None`: discovered.
    pub jwks_uri: Option<String>,
    /// The gateway's client id at the server.
    pub client_id: String,
    /// How the gateway authenticates its introspection calls.
    pub client_auth: ClientAuth,
    /// RFC 9701: ask for, and require, signed introspection responses.
    pub signed_responses: bool,
    /// PEM bundle trusted for the server's TLS certificate, instead of the default roots.
    pub ca: Option<PathBuf>,
    /// Longest one introspection call may take, and longest it may wait for a call slot.
    pub timeout: Duration,
    /// `Retry-After` of the 503 answered while the server cannot introspect a token.
    pub retry_after: Duration,
    /// Most introspection calls in flight to the server at once.
    pub max_concurrent_calls: usize,
    /// Consecutive failed calls that open the circuit breaker.
    pub circuit_failure_threshold: usize,
    /// How long the open breaker refuses calls before one probe is let through.
    pub circuit_open: Duration,
}

/// The algorithm of `private_key_jwt` client assertions (`signing_alg`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SigningAlg {
    /// ECDSA with P-256 and SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PSS with SHA-256.
    PS256,
}
