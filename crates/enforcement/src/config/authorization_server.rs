//! `[authorization_server]` / `[authorization_servers.NAME]`: where tokens are
//! introspected, and how the gateway authenticates there.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::file::{AuthorizationServerSection, ConfigFile};
use crate::diagnostics::Diagnostics;
use crate::introspection::{AuthorizationServerConfig, ClientAuth, SigningAlg};
use crate::secrets;

/// The client authentication methods a file may name (`client_auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethodName {
    /// `client_secret_basic` (RFC 6749 §2.3.1).
    ClientSecretBasic,
    /// `client_secret_post` (RFC 6749 §2.3.1).
    ClientSecretPost,
    /// `private_key_jwt` (RFC 7523).
    PrivateKeyJwt,
    /// `tls_client_auth` (RFC 8705).
    TlsClientAuth,
    /// A bearer token from the token endpoint.
    Bearer,
}

impl ClientAuthMethodName {
    fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethodName::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethodName::ClientSecretPost => "client_secret_post",
            ClientAuthMethodName::PrivateKeyJwt => "private_key_jwt",
            ClientAuthMethodName::TlsClientAuth => "tls_client_auth",
            ClientAuthMethodName::Bearer => "bearer",
        }
    }
}

/// Validates every authorization server section (at least one).
pub(super) fn validate_all(file: &ConfigFile, d: &mut Diagnostics) -> Vec<AuthorizationServerConfig> {
    let mut sections: Vec<(String, &AuthorizationServerSection)> = Vec::new();
    if let Some(single) = &file.authorization_server {
        sections.push((single.name.clone().unwrap_or_else(|| "default".into()), single));
    }
    for (name, section) in &file.authorization_servers {
        sections.push((name.clone(), section));
    }
    if sections.is_empty() {
        d.error(None, "no [authorization_server] (or [authorization_servers.NAME]) section");
    }
    if file.authorization_server.is_some() && !file.authorization_servers.is_empty() {
        d.error(None, "use either [authorization_server] or [authorization_servers.NAME], not both");
    }
    sections.into_iter().map(|(name, section)| validate(&name, section, d)).collect()
}

/// One server's section; problems are reported under its name.
fn validate(name: &str, s: &AuthorizationServerSection, d: &mut Diagnostics) -> AuthorizationServerConfig {
    let fail = |d: &mut Diagnostics, span: Option<std::ops::Range<usize>>, msg: String| {
        d.error(span, format!("authorization server `{name}`: {msg}"));
    };
    let url = |d: &mut Diagnostics, v: &Option<Spanned<String>>, what: &str| {
        let v = v.as_ref()?;
        match v.get_ref().parse::<http::Uri>() {
            Ok(uri) if matches!(uri.scheme_str(), Some("https") | Some("http")) && uri.host().is_some() => {
                Some(v.get_ref().trim_end_matches('/').to_string())
            }
            _ => {
                fail(d, Some(v.span()), format!("{what} `{}` is not an http(s) URL", v.get_ref()));
                None
            }
        }
    };
    let issuer = url(d, &s.issuer, "issuer");
    let introspection_endpoint = url(d, &s.introspection_endpoint, "introspection_endpoint");
    let token_endpoint = url(d, &s.token_endpoint, "token_endpoint");
    let jwks_uri = url(d, &s.jwks_uri, "jwks_uri");
    if s.introspection_endpoint.is_none() && s.issuer.is_none() {
        fail(d, None, "give `issuer` (for discovery) or `introspection_endpoint`".into());
    }
    if s.signed_responses && s.issuer.is_none() {
        fail(d, None, "signed_responses needs `issuer` (the expected `iss` of the signed response)".into());
    }
    let method = *s.client_auth.get_ref();
    let secret = |d: &mut Diagnostics| {
        let span = s.client_secret.as_ref().or(s.client_secret_file.as_ref()).map(|s| s.span());
        match secrets::resolve(
            s.client_secret.as_ref().map(|s| s.get_ref().as_str()),
            s.client_secret_file.as_ref().map(|f| d.base.join(f.get_ref())).as_deref(),
            "client_secret",
        ) {
            Ok(Some(secret)) => secret,
            Ok(None) => {
                fail(
                    d,
                    Some(s.client_auth.span()),
                    format!("{} needs client_secret or client_secret_file", method.as_str()),
                );
                String::new()
            }
            Err(m) => {
                fail(d, span, m);
                String::new()
            }
        }
    };
    let file_of = |d: &mut Diagnostics, v: &Option<Spanned<String>>, what: &str| match v {
        Some(v) => d.existing_file(v.get_ref(), v.span(), what),
        None => {
            d.error(
                Some(s.client_auth.span()),
                format!("authorization server `{name}`: {} needs {what}", method.as_str()),
            );
            PathBuf::new()
        }
    };
    let client_auth = match method {
        ClientAuthMethodName::ClientSecretBasic => ClientAuth::SecretBasic { secret: secret(d) },
        ClientAuthMethodName::ClientSecretPost => ClientAuth::SecretPost { secret: secret(d) },
        ClientAuthMethodName::PrivateKeyJwt => ClientAuth::PrivateKeyJwt {
            private_key: file_of(d, &s.private_key, "private_key"),
            alg: s.signing_alg.unwrap_or(SigningAlg::ES256),
            key_id: s.key_id.clone(),
        },
        ClientAuthMethodName::TlsClientAuth => ClientAuth::TlsClientAuth {
            certificate: file_of(d, &s.client_certificate, "client_certificate"),
            private_key: file_of(d, &s.client_key, "client_key"),
        },
        ClientAuthMethodName::Bearer => {
            if token_endpoint.is_none() && s.issuer.is_none() {
                d.error(
                    Some(s.client_auth.span()),
                    format!("authorization server `{name}`: bearer needs token_endpoint or issuer"),
                );
            }
            ClientAuth::Bearer {
                secret: secret(d),
                scope: s.token_scope.clone().unwrap_or_else(|| "introspect_tokens".into()),
            }
        }
    };
    let ca = s.ca.as_ref().map(|ca| d.existing_file(ca.get_ref(), ca.span(), "CA"));
    if s.timeout_ms == 0 {
        let at = server_key(d, name, "timeout_ms");
        d.error(at, format!("authorization server `{name}`: timeout_ms must be above 0"));
    }
    if !(s.circuit_open_seconds.is_finite() && (0.0..=3600.0).contains(&s.circuit_open_seconds)) {
        let at = server_key(d, name, "circuit_open_seconds");
        d.error(at, format!("authorization server `{name}`: circuit_open_seconds must be between 0 and 3600"));
    }
    AuthorizationServerConfig {
        name: name.to_string(),
        issuer,
        introspection_endpoint,
        token_endpoint,
        jwks_uri,
        client_id: s.client_id.clone(),
        client_auth,
        signed_responses: s.signed_responses,
        ca,
        timeout: Duration::from_millis(s.timeout_ms.max(1)),
        retry_after: Duration::from_secs(s.retry_after_seconds),
        max_concurrent_calls: s.max_concurrent_calls.max(1),
        circuit_failure_threshold: s.circuit_failure_threshold.max(1),
        circuit_open: Duration::from_secs_f64(s.circuit_open_seconds.clamp(0.0, 3600.0)),
    }
}

/// Where a key of authorization server `name` is written (either section form).
fn server_key(d: &Diagnostics, name: &str, key: &str) -> Option<std::ops::Range<usize>> {
    d.key(&["authorization_servers", name, key]).or_else(|| d.key(&["authorization_server", key]))
}
