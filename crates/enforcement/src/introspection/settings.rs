//! How the gateway reaches and authenticates to an authorization server.

use std::fmt;

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// How the gateway authenticates to an authorization server.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAuth {
    SecretBasic {
        secret: String,
    },
    SecretPost {
        secret: String,
    },
    /// RFC 7523 client assertion signed with `private_key` (PEM), `alg` RS256, PS256 or ES256.
    PrivateKeyJwt {
        private_key: PathBuf,
        alg: SigningAlg,
        key_id: Option<String>,
    },
    /// RFC 8705: the gateway's own client certificate, at the server's mTLS endpoint.
    TlsClientAuth {
        certificate: PathBuf,
        private_key: PathBuf,
    },
    /// A bearer token obtained with client_credentials (`client_secret_basic`) at the token endpoint.
    Bearer {
        secret: String,
        scope: String,
    },
}

impl ClientAuth {
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

#[derive(Debug, Clone)]
pub struct AuthorizationServerConfig {
    /// Names the server in policies, metrics and cache keys.
    pub name: String,
    pub issuer: Option<String>,
    pub introspection_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub client_id: String,
    pub client_auth: ClientAuth,
    /// RFC 9701: ask for, and require, signed introspection responses.
    pub signed_responses: bool,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
    pub retry_after: Duration,
    pub max_concurrent_calls: usize,
    pub circuit_failure_threshold: usize,
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
