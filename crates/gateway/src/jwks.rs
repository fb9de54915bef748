//! `GET /.well-known/jwks.json`: the public keys of the grant JWTs the gateway signs for
//! the bank, on the admin listener, and on the main listener when `grant_jwt.jwks_on_listener`.
//!
//! Always the keys of the configuration in force: a reload that adds a key publishes it at
//! once. Banks cache the document for `max-age` and fetch it again on an unknown `kid`.

use fapi_enforcement::enforcer::Live;

/// How long a bank may cache the JWKS: short, so a rotation reaches it soon.
pub const MAX_AGE_SECONDS: u32 = 300;

/// The JWK Set of `live`, or `None` when no grant JWTs are signed.
pub fn jwks(live: &Live) -> Option<String> {
    live.settings.grant_jwt.as_ref().map(|g| g.keys.jwks_json().to_string())
}

/// The headers of a JWKS response.
pub fn headers() -> [(&'static str, String); 2] {
    [
        ("content-type", "application/jwk-set+json".into()),
        ("cache-control", format!("public, max-age={MAX_AGE_SECONDS}")),
    ]
}
