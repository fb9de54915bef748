//! `[grant_jwt]`: the issuer and the signing keys of the JWT the gateway signs for the bank
//! (see [`crate::grant_jwt`]).
//!
//! ```toml
//! [grant_jwt]
//! issuer = "https://gateway.bank.example"
//! jwks_on_listener = false          # also serve /.well-known/jwks.json on the main listener
//! # signing_kid = "2026-11"         # by default the last key listed signs
//! [[grant_jwt.keys]]
//! kid = "2026-11"
//! algorithm = "ES256"               # or "EdDSA", "PS256"
//! private_key_file = "keys/grant-2026-11.pem"   # or private_key = "${GRANT_KEY_PEM}"
//! ```

use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::Diagnostics;
use crate::grant_jwt::{Algorithm, GrantJwtSettings, KeySet, SigningKey};
use crate::policy::PolicySet;
use crate::secrets;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GrantJwtSection {
    issuer: Spanned<String>,
    #[serde(default)]
    jwks_on_listener: bool,
    signing_kid: Option<Spanned<String>>,
    keys: Spanned<Vec<KeySection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySection {
    kid: Option<Spanned<String>>,
    #[serde(default)]
    algorithm: Algorithm,
    private_key: Option<Spanned<String>>,
    private_key_file: Option<Spanned<String>>,
}

pub(super) fn validate(section: Option<&GrantJwtSection>, d: &mut Diagnostics) -> Option<Arc<GrantJwtSettings>> {
    let s = section?;
    let issuer = s.issuer.get_ref().trim();
    if issuer.is_empty() || issuer != s.issuer.get_ref() {
        d.error(Some(s.issuer.span()), "grant_jwt.issuer is empty or has spaces around it");
    }
    let mut keys = Vec::new();
    let mut key_files = Vec::new();
    let mut failed = false;
    for k in s.keys.get_ref() {
        let span = k.private_key.as_ref().or(k.private_key_file.as_ref()).map(|v| v.span()).or(Some(s.keys.span()));
        let file = k.private_key_file.as_ref().map(|f| d.base.join(f.get_ref()));
        let pem = match secrets::resolve(
            k.private_key.as_ref().map(|v| v.get_ref().as_str()),
            file.as_deref(),
            "grant_jwt.keys.private_key",
        ) {
            Ok(Some(pem)) => pem,
            Ok(None) => {
                d.error(span, "grant_jwt.keys: give private_key_file (or private_key)");
                failed = true;
                continue;
            }
            Err(m) => {
                d.error(span, m);
                failed = true;
                continue;
            }
        };
        key_files.extend(file);
        let kid = k.kid.as_ref().map(|v| v.get_ref().as_str());
        match SigningKey::from_pem(k.algorithm, kid, pem.as_bytes()) {
            Ok(key) => keys.push(key),
            Err(m) => {
                d.error(span, format!("grant_jwt key {}: {m}", kid.unwrap_or("")));
                failed = true;
            }
        }
    }
    if failed {
        return None;
    }
    match KeySet::new(keys, s.signing_kid.as_ref().map(|k| k.get_ref().as_str())) {
        Ok(keys) => Some(Arc::new(GrantJwtSettings {
            issuer: issuer.to_string(),
            keys: Arc::new(keys),
            jwks_on_listener: s.jwks_on_listener,
            key_files,
        })),
        Err(m) => {
            let span = s.signing_kid.as_ref().map(|k| k.span()).unwrap_or(s.keys.span());
            d.error(Some(span), format!("grant_jwt.keys: {m}"));
            None
        }
    }
}

/// An API that forwards a grant JWT needs keys to sign it with.
pub(super) fn apis_need_keys(policies: &PolicySet, settings: Option<&GrantJwtSettings>, d: &mut Diagnostics) {
    if settings.is_some() {
        return;
    }
    for api in policies.apis().iter().filter(|a| a.forward_jwt.is_some()) {
        d.error(
            None,
            format!(
                "API `{}` ({}) sets forward_jwt but gateway.toml has no [grant_jwt] section with signing keys",
                api.name,
                api.file.display()
            ),
        );
    }
}
