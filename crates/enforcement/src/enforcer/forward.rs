//! What a grant does to the request the bank receives: the path without the API's prefix,
//! the identity headers set by the gateway alone, and nothing the bank could mistake for
//! them.

use pingora_http::RequestHeader;

use super::{ForwardingSettings, INTERACTION_ID};
use crate::config::IdentityHeaderNames;
use crate::policy::Grant;

/// Hop-by-hop headers (RFC 9110 §7.6.1): for this connection only, never forwarded.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

/// The headers that tell the bank who is asking under which consent (names from
/// `[forwarding.headers]`), in the order they are set.
/// With a grant JWT, its header too, and the plain ones only if the API keeps them.
pub fn identity_headers<'g>(grant: &'g Grant, names: &'g IdentityHeaderNames) -> Vec<(&'g str, String)> {
    let mut headers = Vec::with_capacity(6);
    if let Some(signed) = &grant.signed_identity {
        headers.push((&*signed.header, signed.jwt.to_string()));
        if !signed.identity_headers {
            return headers;
        }
    }
    if let Some(v) = &grant.consent_id {
        headers.push((names.consent_id.as_str(), v.clone()));
    }
    if let Some(v) = &grant.client_id {
        headers.push((names.client_id.as_str(), v.clone()));
    }
    if let Some(v) = &grant.subject {
        headers.push((names.subject.as_str(), v.clone()));
    }
    if !grant.scopes.is_empty() {
        headers.push((names.scopes.as_str(), grant.scopes.clone()));
    }
    if !grant.accounts.is_empty() {
        headers.push((names.accounts.as_str(), grant.accounts.join(",")));
    }
    headers
}

/// Rewrites the request for the bank: the upstream path; whatever the client sent under
/// the identity header names, hop-by-hop headers (and those `Connection` names), header
/// names with `_`, certificate headers and (unless configured) `Authorization` removed;
/// then the identity headers and the interaction id set.
pub fn apply_grant(
    upstream: &mut RequestHeader,
    grant: &Grant,
    settings: &ForwardingSettings,
    interaction_id: &str,
) -> pingora_core::Result<()> {
    let uri = grant
        .upstream_path
        .parse()
        .map_err(|_| pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "bad upstream path"))?;
    upstream.set_uri(uri);
    let names = &settings.identity_headers;
    // Whatever the client sent under our identity header names is not to be believed.
    for name in names.all().into_iter().chain(settings.grant_jwt_headers.iter().map(|n| &**n)) {
        while upstream.remove_header(name).is_some() {}
    }
    // Headers named in Connection, and the standard hop-by-hop ones, stop here.
    let named: Vec<String> = upstream
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .filter(|n| !n.is_empty())
        .collect();
    for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
        while upstream.remove_header(name).is_some() {}
    }
    // Header names with `_` are dropped (as nginx does by default): CGI, WSGI and PHP
    // stacks read `X_Consent_Id` as `X-Consent-Id`, an identity header.
    let underscored: Vec<http::HeaderName> =
        upstream.headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
    for name in underscored {
        while upstream.remove_header(&name).is_some() {}
    }
    // The proxy's certificate headers were for the gateway.
    for name in ["client-cert", "client-cert-chain", "x-ssl-client-cert"] {
        upstream.remove_header(name);
    }
    if !settings.forward_authorization {
        upstream.remove_header("authorization");
    }
    for (name, value) in identity_headers(grant, names) {
        upstream.insert_header(name.to_string(), value)?;
    }
    upstream.insert_header(INTERACTION_ID, interaction_id)?;
    Ok(())
}
