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
pub mod profile;
pub mod router;

use std::net::SocketAddr;
use std::path::PathBuf;

use http::Method;
use serde_json::Value;

use crate::introspection::TokenInfo;
use crate::refusal::{ConsentRefusal, Refusal};
pub use claims::{Claim, ClaimMapping, ClaimPath, Node};
pub use router::{PathParams, PathTemplate, RouteMiss, Router};

/// A backend the gateway forwards to. Plain HTTP on the bank's internal network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name policy files use for it (`upstream = "…"`), from `gateway.toml`.
    pub name: String,
    /// Where it listens, resolved once when the configuration is loaded.
    pub address: SocketAddr,
}

/// How a route's token must be sender-constrained (`binding`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Binding {
    /// RFC 8705: `cnf.x5t#S256` equals this connection's client certificate.
    #[default]
    Mtls,
    /// RFC 9449: `Authorization: DPoP` with a valid proof whose key is `cnf.jkt`.
    Dpop,
    /// Either of the above, by the scheme the request uses.
    MtlsOrDpop,
    /// Any active token; for non-FAPI routes only.
    None,
}

/// One route of an API.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP methods served (by default `GET`).
    pub methods: Vec<Method>,
    /// The path template under the API's prefix (`/accounts/{AccountId}/balances`).
    pub path: String,
    /// OAuth scopes the token must all have.
    pub scopes: Vec<String>,
    /// OAuth scopes of which the token must have one (empty: not checked).
    pub scopes_any: Vec<String>,
    /// Consent permissions needed, all of them (UK `ReadBalances`); scopes where the profile
    /// has no permissions claim.
    pub permissions: Vec<String>,
    /// Each group needs one of its permissions.
    pub permissions_any: Vec<Vec<String>>,
    /// Whether the token must carry a consent; `false` skips its presence, kind, status,
    /// expiry and permission checks.
    pub require_consent: bool,
    /// Kinds of consent that grant this route (e.g. `account-access-consent`); empty: any.
    pub consent_types: Vec<String>,
    /// Whether the route takes a request body; `None`: for POST, PUT and PATCH only.
    pub request_body: Option<bool>,
    /// Whether `;` path parameters are passed to the bank (else refused as not normal form).
    pub path_parameters: bool,
    /// The path parameter naming an account (`AccountId`), which must be one the consent
    /// granted.
    pub account_param: Option<String>,
    /// How the token must be sender-constrained.
    pub binding: Binding,
    /// Introspection results older than this are fetched again for this route
    /// (shorter than the cache's maximum, e.g. for payments).
    pub cache_ttl: Option<std::time::Duration>,
    /// Only these `client_id`s (empty: any).
    pub client_ids: Vec<String>,
    /// The token's `acr` must be one of these (empty: not checked).
    pub acr_values: Vec<String>,
    /// Consent statuses that grant this route, instead of the profile's (e.g. payments).
    pub consent_status: Option<Vec<String>>,
    /// Where the request body names its consent (e.g. `Data.ConsentId`); must equal the token's.
    pub body_consent: Option<ClaimPath>,
    /// Largest request body accepted, when the body is read (`body_consent`).
    pub max_body_bytes: usize,
    /// This route's own limit on request bodies (else the gateway's `limits.max_body_bytes`).
    pub body_limit: Option<u64>,
    /// No token needed (e.g. open data): the listener's mutual TLS still applies.
    pub public: bool,
    /// Where the route is written, for `check` and `explain`.
    pub file: PathBuf,
    /// Its line in `file`.
    pub line: usize,
}

/// One bank API: the routes served under a prefix, and where they go.
#[derive(Debug)]
pub struct Api {
    /// The API's name in logs, metrics and grants (the file's `name`, else its stem).
    pub name: String,
    /// The policy file it was read from.
    pub file: PathBuf,
    /// The line of its `prefix` in `file`.
    pub line: usize,
    /// The path prefix it is served under (`/gobank`; empty: none), removed before forwarding.
    pub prefix: String,
    /// The bank backend its requests go to.
    pub upstream: Upstream,
    /// Name of the authorization server whose tokens this API takes.
    pub authorization_server: String,
    /// The token's `aud` must name one of these (RFC 8707 resource indicators); empty:
    /// not checked (`check` warns when another API shares the authorization server).
    pub audiences: Vec<String>,
    /// Where its authorization server puts the consent: the profile's mapping, with the
    /// file's overrides.
    pub claims: ClaimMapping,
    /// Whether and how its requests carry a gateway-signed grant JWT (off: `None`).
    pub forward_jwt: Option<crate::grant_jwt::ForwardJwt>,
    /// Its routes, the profile's ready-made ones included when asked for.
    pub routes: Vec<Route>,
    /// Not errors, but worth an operator's look (`check` prints them).
    pub warnings: Vec<crate::diagnostics::ConfigError>,
    router: Router<usize>,
    /// Its `[[rate_limit]]` and `[[quota]]` rules, in file order.
    pub limits: Vec<crate::traffic::LimitRule>,
    /// PSD2's unattended-access limit, when the API switches it on.
    pub unattended_access: Option<crate::traffic::UnattendedAccess>,
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
    /// The API whose prefix the path is under.
    pub api: &'a Api,
    /// The route matching the method and path.
    pub route: &'a Route,
    /// The route template's parameter values, percent-decoded.
    pub params: PathParams,
    /// The path as the upstream sees it: prefix removed, query kept.
    pub upstream_path: String,
}

/// What the gateway tells the bank about an allowed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The API's name.
    pub api: String,
    /// The matched route's path template (a metric label, never the raw path).
    pub route: String,
    /// The bank backend to forward to (its first target, for hosts that forward by address).
    pub upstream: SocketAddr,
    /// The name of that upstream in `gateway.toml` (the gateway picks one of its targets).
    pub upstream_name: String,
    /// The path and query the backend sees: the API's prefix removed.
    pub upstream_path: String,
    /// The token's consent id, when it has one.
    pub consent_id: Option<String>,
    /// The OAuth client the token was issued to.
    pub client_id: Option<String>,
    /// The token's `sub`, usually the customer who consented.
    pub subject: Option<String>,
    /// The token's scopes, space-separated.
    pub scopes: String,
    /// Every account the consent grants, not only the one requested.
    pub accounts: Vec<String>,
    /// The gateway-signed JWT of this grant, when the API forwards one.
    pub signed_identity: Option<crate::grant_jwt::SignedIdentity>,
}

impl PolicySet {
    /// The APIs' routes, ordered so the longest prefix matches first.
    pub fn new(mut apis: Vec<Api>) -> PolicySet {
        apis.sort_by_key(|a| std::cmp::Reverse(a.prefix.len()));
        PolicySet { apis }
    }

    /// Every API, longest prefix first.
    pub fn apis(&self) -> &[Api] {
        &self.apis
    }

    /// Finds the route for a request. Paths that are not in normal form (`.`/`..`
    /// segments, empty segments, encoded `/`, `\`, `.` or `;`) are refused rather than
    /// guessed at, since the bank might resolve them differently; so are `;` path
    /// parameters (`/statements/..;/transactions`, which Tomcat resolves) unless the
    /// route allows them.
    pub fn route<'a>(&'a self, method: &Method, path: &str, query: Option<&str>) -> Result<RouteMatch<'a>, Refusal> {
        let form = path_form(path);
        if form == PathForm::NotNormal {
            return Err(Refusal::InvalidRequest {
                description: "the request path is not in normal form",
                field: "path",
            });
        }
        let found = self.find(method, path, query)?;
        if form == PathForm::WithParameters && !found.route.path_parameters {
            return Err(Refusal::InvalidRequest {
                description: "path parameters (`;`) are not accepted on this route",
                field: "path",
            });
        }
        Ok(found)
    }

    fn find<'a>(&'a self, method: &Method, path: &str, query: Option<&str>) -> Result<RouteMatch<'a>, Refusal> {
        let mut allowed: Vec<Method> = Vec::new();
        let mut in_api = false;
        for api in &self.apis {
            let Some(rest) = strip_prefix(path, &api.prefix) else {
                continue;
            };
            in_api = true;
            match api.router.find(method, rest) {
                Ok((index, params)) => {
                    let mut upstream_path = if rest.is_empty() { "/".to_string() } else { rest.to_string() };
                    if let Some(q) = query {
                        upstream_path.push('?');
                        upstream_path.push_str(q);
                    }
                    return Ok(RouteMatch { api, route: &api.routes[index], params, upstream_path });
                }
                Err(RouteMiss::MethodNotAllowed(methods)) => {
                    for m in methods {
                        if !allowed.contains(&m) {
                            allowed.push(m);
                        }
                    }
                }
                Err(RouteMiss::NotFound) => {}
            }
        }
        Err(if !allowed.is_empty() {
            Refusal::MethodNotAllowed { allow: allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ") }
        } else {
            Refusal::NoRoute { in_api }
        })
    }
}

fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// How a request path reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathForm {
    /// Refused: the bank might resolve it to another path than the gateway matched.
    NotNormal,
    /// Every segment non-empty, no dot segments, nothing encoded that changes the path.
    Normal,
    /// Normal, with `;` parameters in some segment (`/accounts;v=1`).
    WithParameters,
}

/// Classifies a path: encoded `/`, `\`, `.` and `;` (which some servers decode before
/// routing), `\` itself, empty segments and `.`/`..` segments (also before a `;`, as
/// `..;`) are not normal form.
#[inline]
pub fn path_form(path: &str) -> PathForm {
    let Some(rest) = path.as_bytes().strip_prefix(b"/") else {
        return PathForm::NotNormal;
    };
    if rest.is_empty() {
        return PathForm::Normal;
    }
    // One pass over the bytes (this runs on every request): each segment's part before
    // any `;` must be a name, and nothing encoded may change the path.
    let mut parameters = false;
    let mut segment_start = 0;
    let mut base_end: Option<usize> = None;
    for i in 0..=rest.len() {
        match rest.get(i).copied().unwrap_or(b'/') {
            b'/' => {
                let base = &rest[segment_start..base_end.unwrap_or(i)];
                if base.is_empty() || base == b"." || base == b".." {
                    return PathForm::NotNormal;
                }
                segment_start = i + 1;
                base_end = None;
            }
            b';' => {
                parameters = true;
                base_end.get_or_insert(i);
            }
            b'\\' => return PathForm::NotNormal,
            b'%' if i + 2 < rest.len() => {
                if matches!((rest[i + 1], rest[i + 2] | 0x20), (b'2', b'f' | b'e') | (b'5', b'c') | (b'3', b'b')) {
                    return PathForm::NotNormal;
                }
            }
            _ => {}
        }
    }
    if parameters {
        PathForm::WithParameters
    } else {
        PathForm::Normal
    }
}

/// The checks a route makes, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// RFC 7662 `active` is true.
    Active,
    /// The token's `exp` has not passed.
    NotExpired,
    /// The token's `aud` names the API (RFC 8707), if the API lists audiences.
    Audience,
    /// The token is bound to the client certificate (RFC 8705) or the DPoP key (RFC 9449), as
    /// the route requires.
    Binding,
    /// The token's client is one the route admits.
    Client,
    /// The customer authenticated as strongly as the route requires (`acr`, RFC 9470).
    Acr,
    /// The token has the route's scopes.
    Scopes,
    /// The token carries a consent id.
    ConsentPresent,
    /// The consent is of a kind the route accepts (a payment consent for payments).
    ConsentType,
    /// The consent's status grants access (UK `Authorised`).
    ConsentStatus,
    /// The consent's expiry has not passed.
    ConsentNotExpired,
    /// The consent grants the route's permissions.
    Permissions,
    /// The account in the path is one the consent granted.
    Account,
    /// The consent the request body names is the token's (`Data.ConsentId`).
    BodyConsent,
}

impl Check {
    /// The check as `explain` names it.
    pub fn name(self) -> &'static str {
        match self {
            Check::Active => "token active",
            Check::NotExpired => "token not expired",
            Check::Audience => "token meant for this API (aud)",
            Check::Binding => "certificate binding (RFC 8705)",
            Check::Client => "client allowed",
            Check::Acr => "authentication context (acr)",
            Check::Scopes => "scopes",
            Check::ConsentPresent => "consent present",
            Check::ConsentType => "consent kind",
            Check::ConsentStatus => "consent status",
            Check::ConsentNotExpired => "consent not expired",
            Check::Permissions => "consent permissions",
            Check::Account => "account granted",
            Check::BodyConsent => "request names the token's consent",
        }
    }
}

/// Receives each check's outcome. The gateway stops at the first failure; `explain`
/// records every check, with details.
pub trait CheckSink {
    /// Whether to compute details for passed checks (costs allocations; explain only).
    fn verbose(&self) -> bool {
        false
    }
    /// Records an outcome; returns whether to go on after a failure.
    fn record(&mut self, check: Check, outcome: Result<String, &Refusal>) -> bool;
}

/// Stops at the first failure; keeps nothing.
struct FirstFailure;

impl CheckSink for FirstFailure {
    fn record(&mut self, _check: Check, _outcome: Result<String, &Refusal>) -> bool {
        false
    }
}

/// Every check's outcome, for `explain`.
#[derive(Debug, Default)]
pub struct Explanation {
    /// Each check that ran, in order, with its detail or its refusal.
    pub checks: Vec<(Check, Result<String, Refusal>)>,
}

impl CheckSink for Explanation {
    fn verbose(&self) -> bool {
        true
    }
    fn record(&mut self, check: Check, outcome: Result<String, &Refusal>) -> bool {
        self.checks.push((check, outcome.map_err(Clone::clone)));
        true
    }
}

/// What a request brings besides its token.
#[derive(Debug, Clone, Copy, Default)]
pub struct Presented<'a> {
    /// Base64url SHA-256 of the connection's client certificate.
    pub certificate_thumbprint: Option<&'a str>,
    /// The request body as JSON, for routes with `body_consent`.
    pub body: Option<&'a Value>,
    /// Thumbprint of the key of a verified DPoP proof (with `Authorization: DPoP`).
    pub dpop_thumbprint: Option<&'a str>,
}

impl RouteMatch<'_> {
    /// The grant for a public route: forwarded, with no identity.
    pub fn public_grant(&self) -> Grant {
        Grant {
            api: self.api.name.clone(),
            route: self.route.path.clone(),
            upstream: self.api.upstream.address,
            upstream_name: self.api.upstream.name.clone(),
            upstream_path: self.upstream_path.clone(),
            consent_id: None,
            client_id: None,
            subject: None,
            scopes: String::new(),
            accounts: Vec::new(),
            signed_identity: None,
        }
    }

    /// Decides the request on the token and what the connection presented. `now` is
    /// seconds since the epoch.
    pub fn evaluate(&self, token: &TokenInfo, presented: Presented<'_>, now: u64) -> Result<Grant, Refusal> {
        self.run_checks(token, presented, now, &mut FirstFailure)
    }

    /// Runs every check, recording each outcome in `sink`; the result is the first failure.
    pub fn run_checks(
        &self,
        token: &TokenInfo,
        presented: Presented<'_>,
        now: u64,
        sink: &mut dyn CheckSink,
    ) -> Result<Grant, Refusal> {
        let route = self.route;
        let verbose = sink.verbose();
        let mut first: Option<Refusal> = None;
        // Records one check; returns Err to stop (first failure, unless the sink goes on).
        let mut note = |check: Check, outcome: Result<String, Refusal>| -> Result<(), ()> {
            match outcome {
                Ok(detail) => {
                    sink.record(check, Ok(detail));
                    Ok(())
                }
                Err(refusal) => {
                    let go_on = sink.record(check, Err(&refusal));
                    first.get_or_insert(refusal);
                    if go_on {
                        Ok(())
                    } else {
                        Err(())
                    }
                }
            }
        };
        let detail = |f: &dyn Fn() -> String| if verbose { f() } else { String::new() };

        macro_rules! check {
            ($check:expr, $outcome:expr) => {
                if note($check, $outcome).is_err() {
                    return Err(first.expect("a failure was recorded"));
                }
            };
        }

        check!(
            Check::Active,
            if token.active {
                Ok(detail(&|| "active".into()))
            } else {
                Err(Refusal::InvalidToken { description: "the access token is not active" })
            }
        );
        if !token.active {
            // Nothing else in an inactive response counts (RFC 7662 §2.2).
            return Err(first.expect("recorded"));
        }
        check!(
            Check::NotExpired,
            if token.expired_at(now) {
                Err(Refusal::InvalidToken { description: "the access token has expired" })
            } else {
                Ok(detail(&|| format!("exp {:?}, now {now}", token.exp.map(|e| e.get()))))
            }
        );
        let audiences = &self.api.audiences;
        check!(
            Check::Audience,
            if audiences.is_empty() {
                Ok(detail(&|| "not checked (no audiences for this API)".into()))
            } else if token.audiences.iter().any(|a| audiences.iter().any(|w| **a == **w)) {
                Ok(detail(&|| format!("aud [{}] names this API", token.audiences.join(" "))))
            } else {
                Err(Refusal::InvalidToken { description: "the access token is not meant for this API (aud)" })
            }
        );
        let mtls = || match (&token.certificate_thumbprint, presented.certificate_thumbprint) {
            (Some(bound), Some(p)) if thumbprints_equal(bound, p) => {
                Ok(detail(&|| format!("cnf.x5t#S256 {bound} matches")))
            }
            _ => Err(Refusal::CertificateMismatch),
        };
        let dpop = || match (&token.dpop_thumbprint, presented.dpop_thumbprint) {
            (Some(bound), Some(p)) if **bound == *p => {
                Ok(detail(&|| format!("cnf.jkt {bound} matches the proof's key")))
            }
            _ => Err(Refusal::DpopMismatch),
        };
        check!(
            Check::Binding,
            if token.dpop_thumbprint.is_some() && presented.dpop_thumbprint.is_none() {
                // A DPoP-bound token is never accepted as a bearer token (RFC 9449 §7.2).
                Err(Refusal::DpopMismatch)
            } else {
                match route.binding {
                    Binding::None => Ok(detail(&|| "not required by this route".into())),
                    Binding::Mtls => mtls(),
                    Binding::Dpop => dpop(),
                    Binding::MtlsOrDpop if presented.dpop_thumbprint.is_some() => dpop(),
                    Binding::MtlsOrDpop => mtls(),
                }
            }
        );
        check!(
            Check::Client,
            match (&route.client_ids[..], token.client_id.as_deref()) {
                ([], _) => Ok(detail(&|| "any client".into())),
                (allowed, Some(c)) if allowed.iter().any(|a| a == c) => Ok(detail(&|| format!("client {c}"))),
                (_, c) => Err(Refusal::ClientNotAllowed { client_id: c.unwrap_or("").to_string() }),
            }
        );
        check!(
            Check::Acr,
            match (&route.acr_values[..], token.claims.member("acr").and_then(Node::text)) {
                ([], _) => Ok(detail(&|| "not required".into())),
                (allowed, Some(acr)) if allowed.iter().any(|a| a == acr) => Ok(detail(&|| format!("acr {acr}"))),
                (allowed, acr) => {
                    Err(Refusal::InsufficientAcr { acr: acr.unwrap_or("").to_string(), required: allowed.join(" ") })
                }
            }
        );
        let has_scope = |s: &String| token.scopes.iter().any(|t| **t == **s);
        check!(
            Check::Scopes,
            if let Some(missing) = route.scopes.iter().find(|s| !has_scope(s)) {
                Err(Refusal::InsufficientScope { scope: missing.clone() })
            } else if !route.scopes_any.is_empty() && !route.scopes_any.iter().any(has_scope) {
                Err(Refusal::InsufficientScope { scope: route.scopes_any.join(" ") })
            } else {
                Ok(detail(&|| {
                    format!(
                        "token has [{}]; route needs all of [{}], any of [{}]",
                        token.scopes.join(" "),
                        route.scopes.join(" "),
                        route.scopes_any.join(" ")
                    )
                }))
            }
        );

        let claims = &self.api.claims;
        let root = &token.claims;
        let consent_id = claims.consent_id.string(root);
        let accounts = claims.accounts.as_ref().map(|p| p.strings(root)).unwrap_or_default();
        let not_checked = |what: &str| detail(&|| format!("not checked: the API's claim mapping has no {what}"));
        if route.require_consent {
            check!(
                Check::ConsentPresent,
                match consent_id {
                    Some(id) => Ok(detail(&|| format!("{} = {id}", claims.consent_id.as_str()))),
                    None => Err(Refusal::Consent(ConsentRefusal::Missing { claim: claims.consent_id.as_str().into() })),
                }
            );
            if !route.consent_types.is_empty() {
                // A consent of another kind (an account-access consent on a payment route)
                // never grants, whatever scopes the token carries; no kind claim: refused.
                let kind = claims.consent_type.as_ref().and_then(|p| p.string(root));
                check!(
                    Check::ConsentType,
                    match kind {
                        Some(kind) if route.consent_types.iter().any(|k| k == kind) => {
                            Ok(detail(&|| format!("{kind} is one of [{}]", route.consent_types.join(" "))))
                        }
                        _ => Err(Refusal::Consent(ConsentRefusal::Kind {
                            kind: kind.unwrap_or("").to_string(),
                            needed: route.consent_types.join(", "),
                        })),
                    }
                );
            }
            match &claims.status {
                Some(status_path) => {
                    let granting = route.consent_status.as_ref().unwrap_or(&claims.granting_status);
                    check!(
                        Check::ConsentStatus,
                        match status_path.string(root) {
                            Some(status) if granting.iter().any(|g| g == status) => {
                                Ok(detail(&|| format!("{} = {status}", status_path.as_str())))
                            }
                            Some(status) =>
                                Err(Refusal::Consent(ConsentRefusal::Status { status: status.to_string() })),
                            None => Err(Refusal::Consent(ConsentRefusal::ClaimMissing {
                                element: "status",
                                claim: status_path.as_str().into(),
                            })),
                        }
                    );
                }
                None => check!(Check::ConsentStatus, Ok(not_checked("status"))),
            }
            match &claims.expiration {
                // A consent without an expiry (UK `ExpirationDateTime` is optional) does not expire.
                Some(path) => match path.values(root).first() {
                    Some(v) => check!(
                        Check::ConsentNotExpired,
                        match expiry_seconds(*v) {
                            Some(at) if at > now => Ok(detail(&|| format!("{} = {v}", path.as_str()))),
                            _ => Err(Refusal::Consent(ConsentRefusal::Expired)),
                        }
                    ),
                    None => check!(
                        Check::ConsentNotExpired,
                        Ok(detail(&|| format!("no {}: the consent does not expire", path.as_str())))
                    ),
                },
                None => check!(Check::ConsentNotExpired, Ok(not_checked("expiration"))),
            }
            // Specs without a permissions claim express permissions as scopes.
            let has = |p: &String| match &claims.permissions {
                Some(path) => path.contains(root, p),
                None => token.scopes.iter().any(|s| **s == **p),
            };
            let granted = || match &claims.permissions {
                Some(path) => path.strings(root),
                None => token.scopes.iter().map(|s| s.to_string()).collect(),
            };
            check!(
                Check::Permissions,
                if let Some(missing) = route.permissions.iter().find(|p| !has(p)) {
                    Err(Refusal::Consent(ConsentRefusal::Permission { needed: format!("`{missing}`") }))
                } else if let Some(group) = route.permissions_any.iter().find(|g| !g.iter().any(has)) {
                    Err(Refusal::Consent(ConsentRefusal::Permission {
                        needed: format!("one of `{}`", group.join("`, `")),
                    }))
                } else {
                    Ok(detail(&|| format!("granted [{}]", granted().join(" "))))
                }
            );
        }
        if let Some(param) = &route.account_param {
            let raw = self.params.iter().find(|(n, _)| n == param).map(|(_, v)| v.as_str()).unwrap_or("");
            // The account as the bank's router reads the segment (the router decoded it).
            let account = account_in_segment(raw);
            check!(
                Check::Account,
                if accounts.iter().any(|a| a == account) {
                    Ok(detail(&|| format!("{account} is in [{}]", accounts.join(" "))))
                } else {
                    Err(Refusal::Consent(ConsentRefusal::AccountNotGranted { account: account.to_string() }))
                }
            );
        }
        if let Some(path) = &route.body_consent {
            let named = presented.body.and_then(|b| path.string(b));
            check!(
                Check::BodyConsent,
                match (named, consent_id) {
                    (Some(n), Some(c)) if n == c => Ok(detail(&|| format!("{} = {n}", path.as_str()))),
                    (None, _) => Err(Refusal::InvalidRequest {
                        description: "the request body does not name a consent",
                        field: "Data.ConsentId"
                    }),
                    _ => Err(Refusal::Consent(ConsentRefusal::Mismatch)),
                }
            );
        }
        if let Some(refusal) = first {
            return Err(refusal);
        }
        Ok(Grant {
            api: self.api.name.clone(),
            route: route.path.clone(),
            upstream: self.api.upstream.address,
            upstream_name: self.api.upstream.name.clone(),
            upstream_path: self.upstream_path.clone(),
            consent_id: consent_id.map(str::to_string),
            client_id: token.client_id.as_deref().map(str::to_string),
            subject: token.subject.as_deref().map(str::to_string),
            scopes: token.scopes.join(" "),
            accounts,
            signed_identity: None,
        })
    }
}

/// An account id as a bank's router extracts it from a (percent-decoded) path segment:
/// the part before any `;` parameters (an encoded `;` is refused before routing).
fn account_in_segment(segment: &str) -> &str {
    segment.split(';').next().unwrap_or("")
}

/// Thumbprints compare as base64url without padding; some servers pad.
fn thumbprints_equal(bound: &str, presented: &str) -> bool {
    bound.trim_end_matches('=') == presented.trim_end_matches('=')
}

/// An expiry as RFC 3339 text or seconds since the epoch.
fn expiry_seconds<N: Node>(v: &N) -> Option<u64> {
    if let Some(n) = v.number() {
        return Some(n);
    }
    time::OffsetDateTime::parse(v.text()?, &time::format_description::well_known::Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
}

#[cfg(test)]
mod onboarding_tests;
#[cfg(test)]
mod tests;
