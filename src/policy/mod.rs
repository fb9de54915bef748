//! Declarative route policies, compiled at start into a [`PolicySet`].
//!
//! Each file in `policies/` describes one bank API: the path prefix it is served under,
//! the upstream it forwards to, the profile saying where the consent sits in the
//! introspection response (overridable claim by claim), and its routes. A route names its
//! methods and path template, the scopes and consent permissions it needs, whether an
//! account in the path must be one the consent granted, and how the token must be bound.
//! Requests that match no route are refused.

pub mod claims;
mod file;
pub mod router;

use std::net::SocketAddr;
use std::path::PathBuf;

use http::Method;
use serde_json::Value;

use crate::config::Upstream;
use crate::introspection::TokenInfo;
use crate::refusal::{ConsentRefusal, Refusal};
pub use claims::{ClaimMapping, ClaimPath};
pub use router::{PathParams, PathTemplate, RouteMiss, Router};

/// How a route's token must be sender-constrained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// RFC 8705: `cnf.x5t#S256` equals this connection's client certificate.
    Mtls,
    /// Any active token; for non-FAPI routes only.
    None,
}

/// One route of an API.
#[derive(Debug, Clone)]
pub struct Route {
    pub methods: Vec<Method>,
    pub path: String,
    pub scopes: Vec<String>,
    pub scopes_any: Vec<String>,
    pub permissions: Vec<String>,
    /// Each group needs one of its permissions.
    pub permissions_any: Vec<Vec<String>>,
    pub require_consent: bool,
    pub account_param: Option<String>,
    pub binding: Binding,
    /// Introspection results older than this are fetched again for this route
    /// (shorter than the cache's maximum, e.g. for payments).
    pub cache_ttl: Option<std::time::Duration>,
    /// Where the route is written, for `check` and `explain`.
    pub file: PathBuf,
    pub line: usize,
}

/// One bank API: the routes served under a prefix, and where they go.
#[derive(Debug)]
pub struct Api {
    pub name: String,
    pub prefix: String,
    pub upstream: Upstream,
    /// Name of the authorization server whose tokens this API takes.
    pub authorization_server: String,
    pub claims: ClaimMapping,
    pub routes: Vec<Route>,
    router: Router<usize>,
}

/// Every API's routes.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// Longest prefix first.
    apis: Vec<Api>,
}

/// A request matched to its route.
#[derive(Debug)]
pub struct RouteMatch<'a> {
    pub api: &'a Api,
    pub route: &'a Route,
    pub params: PathParams,
    /// The path as the upstream sees it: prefix removed, query kept.
    pub upstream_path: String,
}

/// What the gateway tells the bank about an allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub api: String,
    pub route: String,
    pub upstream: SocketAddr,
    pub upstream_path: String,
    pub consent_id: Option<String>,
    pub client_id: Option<String>,
    pub subject: Option<String>,
    pub scopes: String,
    pub accounts: Vec<String>,
}

impl PolicySet {
    pub fn new(mut apis: Vec<Api>) -> PolicySet {
        apis.sort_by_key(|a| std::cmp::Reverse(a.prefix.len()));
        PolicySet { apis }
    }

    pub fn apis(&self) -> &[Api] {
        &self.apis
    }

    /// Finds the route for a request. Paths that are not in normal form (`.`/`..`
    /// segments, empty segments, encoded `/`, `\` or `.`) are refused rather than guessed
    /// at, since the bank might resolve them differently.
    pub fn route<'a>(&'a self, method: &Method, path: &str, query: Option<&str>) -> Result<RouteMatch<'a>, Refusal> {
        if !is_normal_path(path) {
            return Err(Refusal::InvalidRequest {
                description: "the request path is not in normal form",
                field: "path",
            });
        }
        let mut method_mismatch = false;
        for api in &self.apis {
            let Some(rest) = strip_prefix(path, &api.prefix) else {
                continue;
            };
            match api.router.find(method, rest) {
                Ok((index, params)) => {
                    let mut upstream_path = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
                    if let Some(q) = query {
                        upstream_path.push('?');
                        upstream_path.push_str(q);
                    }
                    return Ok(RouteMatch { api, route: &api.routes[index], params, upstream_path });
                }
                Err(RouteMiss::MethodNotAllowed) => method_mismatch = true,
                Err(RouteMiss::NotFound) => {}
            }
        }
        Err(if method_mismatch { Refusal::MethodNotAllowed } else { Refusal::NoRoute })
    }
}

fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

fn is_normal_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let lower = rest.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || lower.contains("%2e") || rest.contains('\\') {
        return false;
    }
    rest.split('/').all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// Checks that need the token: what `RouteMatch::evaluate` walks through, in order.
impl RouteMatch<'_> {
    /// Decides the request on the token and the connection's certificate thumbprint
    /// (base64url SHA-256 of the leaf). `now` is seconds since the epoch.
    pub fn evaluate(
        &self,
        token: &TokenInfo,
        certificate_thumbprint: Option<&str>,
        now: u64,
    ) -> Result<Grant, Refusal> {
        let route = self.route;
        if !token.active {
            return Err(Refusal::InvalidToken { description: "the access token is not active" });
        }
        if token.expired_at(now) {
            return Err(Refusal::InvalidToken { description: "the access token has expired" });
        }
        if route.binding == Binding::Mtls {
            match (&token.certificate_thumbprint, certificate_thumbprint) {
                (Some(bound), Some(presented)) if thumbprints_equal(bound, presented) => {}
                _ => return Err(Refusal::CertificateMismatch),
            }
        }
        let has_scope = |s: &String| token.scopes.iter().any(|t| t == s);
        if let Some(missing) = route.scopes.iter().find(|s| !has_scope(s)) {
            return Err(Refusal::InsufficientScope { scope: missing.clone() });
        }
        if !route.scopes_any.is_empty() && !route.scopes_any.iter().any(has_scope) {
            return Err(Refusal::InsufficientScope { scope: route.scopes_any.join(" ") });
        }

        let claims = &self.api.claims;
        let root = &token.claims;
        let consent_id = claims.consent_id.string(root).map(str::to_string);
        let accounts = claims.accounts.strings(root);
        if route.require_consent {
            if consent_id.is_none() {
                return Err(Refusal::Consent(ConsentRefusal::Missing));
            }
            if let Some(status_path) = &claims.status {
                let status = status_path.string(root).unwrap_or("");
                if !claims.granting_status.iter().any(|g| g == status) {
                    return Err(Refusal::Consent(ConsentRefusal::Status { status: status.to_string() }));
                }
            }
            if let Some(path) = &claims.expiration {
                if let Some(v) = path.values(root).first() {
                    match expiry_seconds(v) {
                        Some(at) if at > now => {}
                        _ => return Err(Refusal::Consent(ConsentRefusal::Expired)),
                    }
                }
            }
            // Specs without a permissions claim express permissions as scopes.
            let granted: Vec<String> = match &claims.permissions {
                Some(path) => path.strings(root),
                None => token.scopes.clone(),
            };
            let has = |p: &String| granted.iter().any(|g| g == p);
            if let Some(missing) = route.permissions.iter().find(|p| !has(p)) {
                return Err(Refusal::Consent(ConsentRefusal::Permission { needed: format!("`{missing}`") }));
            }
            if let Some(group) = route.permissions_any.iter().find(|g| !g.iter().any(has)) {
                return Err(Refusal::Consent(ConsentRefusal::Permission {
                    needed: format!("one of `{}`", group.join("`, `")),
                }));
            }
        }
        if let Some(param) = &route.account_param {
            let account = self.params.iter().find(|(n, _)| n == param).map(|(_, v)| v.as_str()).unwrap_or("");
            if !accounts.iter().any(|a| a == account) {
                return Err(Refusal::Consent(ConsentRefusal::AccountNotGranted { account: account.to_string() }));
            }
        }
        Ok(Grant {
            api: self.api.name.clone(),
            route: route.path.clone(),
            upstream: self.api.upstream.address,
            upstream_path: self.upstream_path.clone(),
            consent_id,
            client_id: token.client_id.clone(),
            subject: token.subject.clone(),
            scopes: token.scopes.join(" "),
            accounts,
        })
    }
}

/// Thumbprints compare as base64url without padding; some servers pad.
fn thumbprints_equal(bound: &str, presented: &str) -> bool {
    bound.trim_end_matches('=') == presented.trim_end_matches('=')
}

/// An expiry as RFC 3339 text or seconds since the epoch.
fn expiry_seconds(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .ok()
            .and_then(|t| u64::try_from(t.unix_timestamp()).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
