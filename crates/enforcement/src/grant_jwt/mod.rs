//! The grant JWT: a short-lived JWT, signed by the gateway, that tells the bank who is
//! calling under which consent, so the bank can verify that instead of trusting plain
//! identity headers by network position.
//!
//! An API turns it on in its policy file (`[api] forward_jwt = { header = "x-fapi-grant" }`);
//! `[grant_jwt]` in `gateway.toml` names the issuer and the keys ([`keys`]). The claims
//! are listed in [`claims`].
//!
//! Signing costs tens of microseconds, so a JWT is signed once per token, API and lifetime
//! and kept with the token's cache entry ([`JwtSlot`]): it is reused for the token's
//! requests to that API until half its lifetime has passed, then signed again. A reload
//! (new keys, a new signing key, another issuer) makes every kept JWT stale. A revocation
//! removes the cache entry and with it its JWTs. Hence:
//! - `jti` is unique per signed JWT, not per request: a bank that wants replay detection
//!   per request keys it on `jti` and `x-fapi-interaction-id` together;
//! - `iat` is when the JWT was signed, which may be up to half its lifetime before the
//!   request;
//! - the interaction id is not a claim: it travels in its own header, `x-fapi-interaction-id`.

pub mod claims;
pub mod keys;
pub mod sign;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use crate::introspection::TokenInfo;
use crate::policy::{Api, Grant};
pub use claims::GrantClaims;
pub use keys::{Algorithm, KeySet, SigningKey, JWT_TYPE};
pub use sign::SignError;

/// Where the JWKS is served: on the admin listener always, on the main listener if asked.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The header the JWT travels in unless an API names another.
pub const DEFAULT_HEADER: &str = "x-fapi-grant";

/// The validated `[grant_jwt]` of `gateway.toml`: who signs, with which keys.
#[derive(Debug)]
pub struct GrantJwtSettings {
    /// `iss` of every grant JWT.
    pub issuer: String,
    /// The keys: one signs, all are published.
    pub keys: Arc<KeySet>,
    /// Whether the main listener also answers `GET /.well-known/jwks.json`.
    pub jwks_on_listener: bool,
    /// The key files, watched for reload.
    pub key_files: Vec<PathBuf>,
}

/// An API's `forward_jwt`: whether and how its requests carry a grant JWT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardJwt {
    /// The header the JWT is sent in (lower case).
    pub header: Arc<str>,
    /// `aud`: by default the API's name.
    pub audience: String,
    /// Longest a JWT is valid (never past the token's `exp`).
    pub lifetime: Duration,
    /// Whether the plain identity headers (`x-consent-id`, …) are still set too.
    pub identity_headers: bool,
}

/// The signed JWT a grant carries to the bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIdentity {
    /// The header it goes in.
    pub header: Arc<str>,
    /// The JWT.
    pub jwt: Arc<str>,
    /// Whether the plain identity headers go too.
    pub identity_headers: bool,
}

/// One signed JWT kept with a cache entry.
#[derive(Debug, Clone)]
struct Issued {
    api: Box<str>,
    audience: Box<str>,
    key_generation: u64,
    lifetime_seconds: u64,
    /// After this second it is signed again.
    refresh_at: u64,
    jwt: Arc<str>,
}

/// The JWTs signed for one token (one per API it was used at), kept with its cache entry
/// so they go when the entry goes (expiry, eviction, revocation).
#[derive(Debug, Default)]
pub struct JwtSlot(ArcSwapOption<Vec<Issued>>);

impl GrantJwtSettings {
    /// The JWT for `grant` (of `token`, at `api`): the one kept in `slot` if it was signed
    /// by the current keys for this API and lifetime and is less than half-way through
    /// its life, else a new one (kept for the next requests).
    pub fn issue(
        &self,
        slot: &JwtSlot,
        forward: &ForwardJwt,
        api: &Api,
        token: &TokenInfo,
        grant: &Grant,
        now: u64,
    ) -> Result<SignedIdentity, SignError> {
        let generation = self.keys.generation();
        let lifetime = forward.lifetime.as_secs();
        let kept = slot.0.load();
        let fresh = kept.as_ref().and_then(|list| {
            list.iter().find(|i| {
                *i.api == *api.name
                    && *i.audience == *forward.audience
                    && i.key_generation == generation
                    && i.lifetime_seconds == lifetime
                    && now < i.refresh_at
            })
        });
        let jwt = match fresh {
            Some(i) => i.jwt.clone(),
            None => {
                let exp = token.exp.map_or(now + lifetime, |e| e.get().min(now + lifetime));
                let jti = uuid::Uuid::new_v4().to_string();
                let claims = GrantClaims::of(&self.issuer, &forward.audience, api, token, grant, now, exp, &jti);
                let jwt: Arc<str> = sign::compact(&self.keys, &claims)?.into();
                let issued = Issued {
                    api: api.name.as_str().into(),
                    audience: forward.audience.as_str().into(),
                    key_generation: generation,
                    lifetime_seconds: lifetime,
                    refresh_at: now + exp.saturating_sub(now) / 2,
                    jwt: jwt.clone(),
                };
                slot.0.rcu(|old| {
                    let mut list: Vec<Issued> = old
                        .iter()
                        .flat_map(|l| l.iter())
                        .filter(|i| *i.api != *api.name && i.key_generation == generation)
                        .cloned()
                        .collect();
                    list.push(issued.clone());
                    Some(Arc::new(list))
                });
                jwt
            }
        };
        Ok(SignedIdentity { header: forward.header.clone(), jwt, identity_headers: forward.identity_headers })
    }
}

#[cfg(test)]
mod tests;

/// Every header name a grant JWT travels in (each API's, and the default), to be removed
/// from what clients send.
pub fn header_names(policies: &crate::policy::PolicySet) -> Vec<Arc<str>> {
    let mut names: Vec<Arc<str>> = vec![DEFAULT_HEADER.into()];
    for f in policies.apis().iter().filter_map(|a| a.forward_jwt.as_ref()) {
        if !names.contains(&f.header) {
            names.push(f.header.clone());
        }
    }
    names
}

/// `[api] forward_jwt` as written in a policy file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardJwtSection {
    #[serde(default = "default_header")]
    header: String,
    audience: Option<String>,
    #[serde(default = "default_lifetime")]
    lifetime_seconds: u64,
    #[serde(default = "yes")]
    identity_headers: bool,
}

fn default_header() -> String {
    DEFAULT_HEADER.into()
}
fn default_lifetime() -> u64 {
    60
}
fn yes() -> bool {
    true
}

/// Headers the grant JWT may not replace: the request's own, and the gateway's.
const RESERVED_HEADERS: [&str; 6] =
    ["authorization", "host", "content-length", "content-type", "x-fapi-interaction-id", "dpop"];

/// Longest lifetime accepted: the JWT is a per-request assertion, not a session.
pub const MAX_LIFETIME_SECONDS: u64 = 3600;

impl ForwardJwtSection {
    /// The validated setting of the API named `api`.
    pub(crate) fn validate(&self, api: &str) -> Result<ForwardJwt, String> {
        let header = self.header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() || header.contains('_') {
            return Err(format!("forward_jwt.header `{}` is not a valid header name", self.header));
        }
        if RESERVED_HEADERS.contains(&header.as_str()) {
            return Err(format!("forward_jwt.header `{header}` is a header the request needs for itself"));
        }
        if !(1..=MAX_LIFETIME_SECONDS).contains(&self.lifetime_seconds) {
            return Err(format!("forward_jwt.lifetime_seconds must be between 1 and {MAX_LIFETIME_SECONDS}"));
        }
        let audience = self.audience.clone().unwrap_or_else(|| api.to_string());
        if audience.trim().is_empty() {
            return Err("forward_jwt.audience is empty".into());
        }
        Ok(ForwardJwt {
            header: header.into(),
            audience,
            lifetime: Duration::from_secs(self.lifetime_seconds),
            identity_headers: self.identity_headers,
        })
    }
}
