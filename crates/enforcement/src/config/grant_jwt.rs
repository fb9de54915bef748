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

#[cfg(test)]
mod tests {
    use crate::config::GatewayConfig;

    const BASE: &str = r#"
[listener]
address = "127.0.0.1:8443"
certificate = "c.pem"
private_key = "k.pem"
client_ca = "ca.pem"
[authorization_server]
introspection_endpoint = "https://127.0.0.1:9443/introspect"
client_id = "gw"
client_secret = "s"
[upstreams]
gobank = "http://127.0.0.1:8070"
"#;

    fn ec_pem() -> String {
        use base64::Engine;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 =
            ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .unwrap();
        let body = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }

    /// Loads BASE + `extra` in a folder with a policy that has `forward_jwt` when asked.
    fn load(extra: &str, forward_jwt: bool) -> Result<GatewayConfig, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        for f in ["c.pem", "k.pem", "ca.pem"] {
            std::fs::write(dir.path().join(f), "x").unwrap();
        }
        std::fs::write(dir.path().join("grant.pem"), ec_pem()).unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        let jwt = if forward_jwt { "forward_jwt = {}\n" } else { "" };
        let policy = format!(
            "[api]\nprefix = \"/gobank\"\nupstream = \"gobank\"\nprofile = \"obuk\"\n{jwt}[[route]]\npath = \"/accounts\"\n"
        );
        std::fs::write(dir.path().join("policies/gobank.toml"), policy).unwrap();
        GatewayConfig::parse(&dir.path().join("gateway.toml"), &format!("{BASE}{extra}"))
            .map_err(|e| e.0.iter().map(|e| format!("{}:{}", e.line.unwrap_or(0), e.message)).collect())
    }

    #[test]
    fn keys_come_from_files_or_the_environment() {
        let from_file =
            "[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nkid = \"a\"\nprivate_key_file = \"grant.pem\"\n";
        let c = load(from_file, true).unwrap();
        let g = c.grant_jwt.unwrap();
        assert_eq!((g.issuer.as_str(), g.keys.signing_key().kid()), ("https://gw", "a"));
        assert_eq!(g.key_files.len(), 1);
        std::env::set_var("FAPI_TEST_GRANT_KEY_PEM", ec_pem());
        let from_env =
            "[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nprivate_key = \"${FAPI_TEST_GRANT_KEY_PEM}\"\n";
        let g = load(from_env, true).unwrap().grant_jwt.unwrap();
        assert_eq!(g.keys.signing_key().kid().len(), 43, "the thumbprint as kid");
        assert!(g.key_files.is_empty());
    }

    #[test]
    fn mistakes_are_reported_with_their_line() {
        let cases = [
            ("[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nprivate_key_file = \"missing.pem\"\n", "16:grant_jwt.keys.private_key_file"),
            ("[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nkid = \"a\"\n", "give private_key_file"),
            ("[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nalgorithm = \"PS256\"\nprivate_key_file = \"grant.pem\"\n", "PS256"),
            ("[grant_jwt]\nissuer = \"https://gw\"\n[[grant_jwt.keys]]\nalgorithm = \"HS256\"\nprivate_key_file = \"grant.pem\"\n", "unknown variant `HS256`"),
            ("[grant_jwt]\nissuer = \" \"\n[[grant_jwt.keys]]\nprivate_key_file = \"grant.pem\"\n", "issuer is empty"),
            ("[grant_jwt]\nissuer = \"x\"\nsigning_kid = \"b\"\n[[grant_jwt.keys]]\nkid = \"a\"\nprivate_key_file = \"grant.pem\"\n", "signing_kid `b` is none of the keys"),
        ];
        for (extra, expected) in cases {
            let problems = load(extra, true).unwrap_err();
            assert!(problems.iter().any(|p| p.contains(expected)), "`{expected}` in {problems:?}");
        }
        let problems = load("", true).unwrap_err();
        assert!(
            problems.iter().any(|p| p.contains("sets forward_jwt but gateway.toml has no [grant_jwt]")),
            "{problems:?}"
        );
        assert!(load("", false).unwrap().grant_jwt.is_none(), "off by default");
    }
}
