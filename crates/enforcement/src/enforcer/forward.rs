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

/// Client certificate headers (RFC 9440 and common proxies'): for the gateway, not the bank.
const CERTIFICATE_HEADERS: [&str; 3] = ["client-cert", "client-cert-chain", "x-ssl-client-cert"];

/// The header names a `Connection` header lists (lower case), usually none.
fn connection_named(upstream: &RequestHeader) -> Vec<String> {
    upstream
        .headers
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
        .filter(|n| !n.is_empty())
        .collect()
}

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
    // One pass over the names the client sent picks what goes; usually that is
    // `Authorization` alone, and nothing is looked up that is not there.
    let connection_named = connection_named(upstream);
    let doomed: Vec<http::HeaderName> = upstream
        .headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            // Whatever the client sent under our identity header names is not to be believed.
            names.all().iter().any(|i| i.eq_ignore_ascii_case(n))
                || settings.grant_jwt_headers.iter().any(|g| g.eq_ignore_ascii_case(n))
                // Headers named in Connection, and the standard hop-by-hop ones, stop here.
                || HOP_BY_HOP.contains(&n)
                || connection_named.iter().any(|c| c == n)
                // Header names with `_` are dropped (as nginx does by default): CGI, WSGI and
                // PHP stacks read `X_Consent_Id` as `X-Consent-Id`, an identity header.
                || n.contains('_')
                // The proxy's certificate headers were for the gateway.
                || CERTIFICATE_HEADERS.contains(&n)
                || (!settings.forward_authorization && n == "authorization")
        })
        .cloned()
        .collect();
    for name in &doomed {
        while upstream.remove_header(name).is_some() {}
    }
    for (name, value) in identity_headers(grant, names) {
        upstream.insert_header(name.to_string(), value)?;
    }
    upstream.insert_header(INTERACTION_ID, interaction_id)?;
    Ok(())
}
