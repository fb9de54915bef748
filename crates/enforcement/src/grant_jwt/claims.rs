//! The claims of the grant JWT: RFC 9068 (JWT access token) and RFC 7662 vocabulary where
//! it fits, and the consent under `consent_*` names.
//!
//! | claim | value |
//! |---|---|
//! | `iss` | `[grant_jwt] issuer` |
//! | `aud` | the API (`forward_jwt.audience`, by default the API's name) |
//! | `sub`, `client_id`, `scope` | the token's (RFC 7662 / RFC 9068) |
//! | `consent_id`, `consent_kind`, `consent_status` | the consent, read with the API's claim mapping |
//! | `consent_accounts` | every account the consent grants (array) |
//! | `cnf` | `{"x5t#S256": …}` (RFC 8705) or `{"jkt": …}` (RFC 9449), as the token is bound |
//! | `iat`, `exp` | when signed; `iat` + lifetime, never past the token's `exp` |
//! | `jti` | unique per signed JWT (a JWT is reused for requests of one token and API) |

use serde::Serialize;

use crate::introspection::TokenInfo;
use crate::policy::{Api, Grant};

/// `cnf` (RFC 7800): the key the token is bound to.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Confirmation<'a> {
    /// SHA-256 thumbprint of the client certificate (RFC 8705).
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub certificate_thumbprint: Option<&'a str>,
    /// JWK thumbprint of the DPoP key (RFC 9449).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<&'a str>,
}

/// What the gateway asserts to the bank about a granted request.
#[derive(Debug, Serialize)]
pub struct GrantClaims<'a> {
    /// The gateway.
    pub iss: &'a str,
    /// The API the JWT is for.
    pub aud: &'a str,
    /// The customer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<&'a str>,
    /// The TPP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<&'a str>,
    /// The token's scopes, space-separated.
    pub scope: &'a str,
    /// The consent id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_id: Option<&'a str>,
    /// The consent's kind (`account-access-consent`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_kind: Option<&'a str>,
    /// The consent's status (`Authorised`, …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consent_status: Option<&'a str>,
    /// Every account the consent grants.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pub consent_accounts: &'a [String],
    /// The key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation<'a>>,
    /// Signed at (seconds since the epoch).
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
    /// This JWT's id.
    pub jti: &'a str,
}

impl<'a> GrantClaims<'a> {
    /// The claims for `grant` of `token` at `api`, valid from `iat` to `exp`.
    #[allow(clippy::too_many_arguments)]
    pub fn of(
        issuer: &'a str,
        audience: &'a str,
        api: &'a Api,
        token: &'a TokenInfo,
        grant: &'a Grant,
        iat: u64,
        exp: u64,
        jti: &'a str,
    ) -> GrantClaims<'a> {
        let consent_kind = api.claims.consent_type.as_ref().and_then(|p| p.string(&token.claims));
        let consent_status = api.claims.status.as_ref().and_then(|p| p.string(&token.claims));
        let cnf = match (&token.certificate_thumbprint, &token.dpop_thumbprint) {
            (None, None) => None,
            (x5t, jkt) => Some(Confirmation { certificate_thumbprint: x5t.as_deref(), jkt: jkt.as_deref() }),
        };
        GrantClaims {
            iss: issuer,
            aud: audience,
            sub: grant.subject.as_deref(),
            client_id: grant.client_id.as_deref(),
            scope: &grant.scopes,
            consent_id: grant.consent_id.as_deref(),
            consent_kind,
            consent_status,
            consent_accounts: &grant.accounts,
            cnf,
            iat,
            exp,
            jti,
        }
    }
}
