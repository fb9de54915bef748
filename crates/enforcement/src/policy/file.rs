//! Reading policy files: the TOML format, and every mistake reported with file and line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::claims::ClaimPath;
use super::profile::Profile;

use super::router::{InsertError, PathTemplate, Router};
use super::Upstream;
use super::{Api, Binding, PolicySet, Route};
use crate::diagnostics::{line_of, ConfigError, ConfigErrors};

/// The largest request body the gateway reads to check it (pingora buffers at most this
/// much for replay to the upstream).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A profile's built-in routes: the same `[[route]]` format as policy files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRoutes {
    route: Vec<Spanned<RouteSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    api: ApiSection,
    #[serde(default)]
    claims: ClaimsSection,
    #[serde(default)]
    route: Vec<Spanned<RouteSection>>,
    #[serde(default)]
    rate_limit: Vec<Spanned<crate::traffic::file::RateLimitSection>>,
    #[serde(default)]
    quota: Vec<Spanned<crate::traffic::file::QuotaSection>>,
    unattended_access: Option<Spanned<crate::traffic::file::UnattendedSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApiSection {
    name: Option<String>,
    prefix: Spanned<String>,
    upstream: Spanned<String>,
    profile: Spanned<String>,
    /// Which authorization server's tokens this API takes; optional when there is one.
    authorization_server: Option<Spanned<String>>,
    /// Start from the profile's ready-made routes.
    #[serde(default)]
    profile_routes: bool,
    /// The token's `aud` must name one of these.
    #[serde(default)]
    audiences: Vec<Spanned<String>>,
    /// `[api.defaults]`: route keys every route of the API takes unless it sets its own.
    #[serde(default)]
    defaults: RouteDefaults,
    /// A gateway-signed JWT of the grant for the bank (`crate::grant_jwt`).
    forward_jwt: Option<Spanned<crate::grant_jwt::ForwardJwtSection>>,
}

/// `[api.defaults]`: what a route of the API says when it does not say otherwise. Public
/// routes take none of them (they take no token).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteDefaults {
    scopes: Option<Vec<String>>,
    scopes_any: Option<Vec<String>>,
    consent: Option<bool>,
    binding: Option<Binding>,
    cache_ttl_seconds: Option<f64>,
    client_ids: Option<Vec<String>>,
    acr_values: Option<Vec<String>>,
    consent_status: Option<Vec<String>>,
    consent_types: Option<Vec<String>>,
    path_parameters: Option<bool>,
}

/// Overrides of the profile's claim mapping. Each consent element but the id is a claim
/// path, or `false`: the server's responses do not carry it, and it is not checked.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimsSection {
    consent_id: Option<Spanned<String>>,
    consent_type: Option<Spanned<toml::Value>>,
    status: Option<Spanned<toml::Value>>,
    granting_status: Option<Vec<String>>,
    permissions: Option<Spanned<toml::Value>>,
    accounts: Option<Spanned<toml::Value>>,
    expiration: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSection {
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    path: Spanned<String>,
    scopes: Option<Vec<String>>,
    scopes_any: Option<Vec<String>>,
    #[serde(default)]
    permissions: Vec<String>,
    #[serde(default)]
    permissions_any: AnyOf,
    consent: Option<bool>,
    account_param: Option<String>,
    binding: Option<Binding>,
    cache_ttl_seconds: Option<f64>,
    client_ids: Option<Vec<String>>,
    acr_values: Option<Vec<String>>,
    consent_status: Option<Vec<String>>,
    /// Kinds of consent that grant the route (the profile's, else any).
    consent_types: Option<Vec<String>>,
    /// Whether the route takes a request body (default: for POST, PUT and PATCH only).
    request_body: Option<bool>,
    /// Whether `;` path parameters (`/a;v=1/b`) are passed to the bank (default: refused).
    path_parameters: Option<bool>,
    body_consent: Option<String>,
    max_body_bytes: Option<usize>,
    /// `false` removes the profile's route with this path and methods.
    #[serde(default = "yes")]
    enabled: bool,
    /// No token needed.
    #[serde(default)]
    public: bool,
}

/// `["A", "B"]` is one group (one of A, B); `[["A", "B"], ["C", "D"]]` is several groups,
/// each of which must be met (UK: Basic or Detail, and Credits or Debits).
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum AnyOf {
    #[default]
    None,
    One(Vec<String>),
    Groups(Vec<Vec<String>>),
}

impl AnyOf {
    fn groups(&self) -> Vec<Vec<String>> {
        match self {
            AnyOf::None => vec![],
            AnyOf::One(g) if g.is_empty() => vec![],
            AnyOf::One(g) => vec![g.clone()],
            AnyOf::Groups(gs) => gs.iter().filter(|g| !g.is_empty()).cloned().collect(),
        }
    }
}

fn default_methods() -> Vec<String> {
    vec!["GET".into()]
}

/// A route's keys with the API's defaults applied (public routes take none).
struct Effective {
    scopes: Vec<String>,
    scopes_any: Vec<String>,
    consent: bool,
    binding: Binding,
    cache_ttl_seconds: Option<f64>,
    client_ids: Vec<String>,
    acr_values: Vec<String>,
    consent_status: Option<Vec<String>>,
    consent_types: Option<Vec<String>>,
    path_parameters: bool,
}

impl Effective {
    fn of(r: &RouteSection, d: &RouteDefaults) -> Effective {
        let none = RouteDefaults::default();
        let d = if r.public { &none } else { d };
        let list = |own: &Option<Vec<String>>, default: &Option<Vec<String>>| {
            own.clone().or_else(|| default.clone()).unwrap_or_default()
        };
        Effective {
            scopes: list(&r.scopes, &d.scopes),
            scopes_any: list(&r.scopes_any, &d.scopes_any),
            consent: r.consent.or(d.consent).unwrap_or(true),
            binding: r.binding.or(d.binding).unwrap_or_default(),
            cache_ttl_seconds: r.cache_ttl_seconds.or(d.cache_ttl_seconds),
            client_ids: list(&r.client_ids, &d.client_ids),
            acr_values: list(&r.acr_values, &d.acr_values),
            consent_status: r.consent_status.clone().or_else(|| d.consent_status.clone()),
            consent_types: r.consent_types.clone().or_else(|| d.consent_types.clone()),
            path_parameters: r.path_parameters.or(d.path_parameters).unwrap_or(false),
        }
    }
}
fn yes() -> bool {
    true
}

impl PolicySet {
    /// Loads every `*.toml` file of `dir`, in name order.
    pub fn load_dir(
        dir: &Path,
        upstreams: &BTreeMap<String, Upstream>,
        servers: &[String],
    ) -> Result<PolicySet, ConfigErrors> {
        Self::load_dir_with(dir, Some((upstreams, servers)))
    }

    /// Checks every policy file of `dir` when `gateway.toml` could not be read: upstream and
    /// authorization server names are taken as they are, every other problem is reported.
    pub fn check_dir_alone(dir: &Path) -> Result<PolicySet, ConfigErrors> {
        Self::load_dir_with(dir, None)
    }

    fn load_dir_with(dir: &Path, refs: Refs) -> Result<PolicySet, ConfigErrors> {
        let entries = std::fs::read_dir(dir).map_err(|e| {
            ConfigErrors(vec![ConfigError::new(dir, None, format!("cannot read the policy folder: {e}"))])
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(ConfigErrors(vec![ConfigError::new(
                dir,
                None,
                "no policy files (*.toml): every request would be refused",
            )]));
        }
        let mut errors = Vec::new();
        let mut apis: Vec<Api> = Vec::new();
        for file in &files {
            let source = match std::fs::read_to_string(file) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(ConfigError::new(file, None, format!("cannot read: {e}")));
                    continue;
                }
            };
            match parse_api(file, &source, refs) {
                Ok(api) => {
                    if let Some(other) = apis.iter().find(|a| a.prefix == api.prefix) {
                        errors.push(ConfigError::new(
                            file,
                            Some(api.line),
                            format!(
                                "prefix `{}` is already served by API `{}` ({}:{})",
                                api.prefix,
                                other.name,
                                other.file.display(),
                                other.line
                            ),
                        ));
                    } else if let Some(other) = apis.iter().find(|a| a.name == api.name) {
                        errors.push(ConfigError::new(
                            file,
                            Some(api.line),
                            format!("API name `{}` is used twice (also {})", other.name, other.file.display()),
                        ));
                    } else {
                        apis.push(api);
                    }
                }
                Err(mut e) => errors.append(&mut e),
            }
        }
        shared_server_warnings(&mut apis);
        if errors.is_empty() {
            Ok(PolicySet::new(apis))
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Parses one policy file's text (used by `load_dir` and by tests).
    pub fn parse_api(
        file: &Path,
        source: &str,
        upstreams: &BTreeMap<String, Upstream>,
        servers: &[String],
    ) -> Result<Api, ConfigErrors> {
        parse_api(file, source, Some((upstreams, servers))).map_err(ConfigErrors)
    }
}

/// Two APIs that take tokens of one authorization server tell them apart only by `aud`:
/// without `audiences`, a token meant for one is accepted by the other.
fn shared_server_warnings(apis: &mut [Api]) {
    let servers: Vec<(String, String)> =
        apis.iter().map(|a| (a.name.clone(), a.authorization_server.clone())).collect();
    for api in apis.iter_mut().filter(|a| a.audiences.is_empty()) {
        let others: Vec<&str> = servers
            .iter()
            .filter(|(name, server)| *name != api.name && *server == api.authorization_server)
            .map(|(name, _)| name.as_str())
            .collect();
        if !others.is_empty() {
            api.warnings.push(ConfigError::new(
                &api.file,
                Some(api.line),
                format!(
                    "API `{}` shares authorization server `{}` with {} but sets no [api] audiences: a token issued for those APIs is accepted here",
                    api.name,
                    api.authorization_server,
                    others.join(", ")
                ),
            ));
        }
    }
}

/// A route to compile: its file and text, the route, and the consent kinds of the profile
/// route it replaces, which it keeps unless it names its own (an override must not drop
/// the kind check).
type RouteSource<'a> = (&'a Path, &'a str, &'a Spanned<RouteSection>, Option<Vec<String>>);

/// What `gateway.toml` defines that policy files name: its upstreams and authorization
/// servers; `None` when it could not be read (any name is taken).
type Refs<'a> = Option<(&'a BTreeMap<String, Upstream>, &'a [String])>;

fn parse_api(file: &Path, source: &str, refs: Refs) -> Result<Api, Vec<ConfigError>> {
    let parsed: PolicyFile = crate::diagnostics::from_toml_all(file, source)?;
    let mut errors = Vec::new();
    let at = |span: std::ops::Range<usize>| Some(line_of(source, span.start));
    let problem = |errors: &mut Vec<ConfigError>, line: Option<usize>, msg: String| {
        errors.push(ConfigError::new(file, line, msg));
    };

    let api = &parsed.api;
    let name = api
        .name
        .clone()
        .unwrap_or_else(|| file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let prefix = api.prefix.get_ref().clone();
    if !(prefix.is_empty()
        || (prefix.starts_with('/') && !prefix.ends_with('/') && PathTemplate::parse(&prefix).is_ok()))
    {
        problem(
            &mut errors,
            at(api.prefix.span()),
            format!("prefix `{prefix}` must be empty or like `/gobank` (no trailing `/`)"),
        );
    } else if prefix.contains(['{', '}']) {
        problem(
            &mut errors,
            at(api.prefix.span()),
            format!("prefix `{prefix}` is matched literally: parameters and catch-alls go in routes' paths"),
        );
    }
    let mut prefix_warnings = Vec::new();
    if let Ok(t) = PathTemplate::parse(&prefix) {
        for glob in t.glob_like_literals() {
            prefix_warnings.push(ConfigError::new(
                file,
                at(api.prefix.span()),
                format!("prefix `{prefix}`: segment `{glob}` is a literal and matches only itself"),
            ));
        }
    }
    let unchecked = BTreeMap::from([(
        api.upstream.get_ref().clone(),
        Upstream { name: api.upstream.get_ref().clone(), address: std::net::SocketAddr::from(([0, 0, 0, 0], 0)) },
    )]);
    let only = [api.authorization_server.as_ref().map(|s| s.get_ref().clone()).unwrap_or_else(|| "default".into())];
    let (upstreams, servers) = refs.unwrap_or((&unchecked, &only));
    let upstream = upstreams.get(api.upstream.get_ref()).cloned();
    if upstream.is_none() {
        let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
        problem(
            &mut errors,
            at(api.upstream.span()),
            format!("unknown upstream `{}` (gateway.toml defines: {})", api.upstream.get_ref(), known.join(", ")),
        );
    }
    let authorization_server = match (&api.authorization_server, servers) {
        (Some(name), _) if servers.contains(name.get_ref()) => Some(name.get_ref().clone()),
        (Some(name), _) => {
            problem(
                &mut errors,
                at(name.span()),
                format!(
                    "unknown authorization server `{}` (gateway.toml defines: {})",
                    name.get_ref(),
                    servers.join(", ")
                ),
            );
            None
        }
        (None, [only]) => Some(only.clone()),
        (None, _) => {
            problem(
                &mut errors,
                at(api.prefix.span()),
                "name the API's authorization_server: gateway.toml defines several".into(),
            );
            None
        }
    };
    let mut audiences = Vec::new();
    for a in &api.audiences {
        if a.get_ref().trim().is_empty() || a.get_ref().trim() != a.get_ref() {
            problem(&mut errors, at(a.span()), format!("audience `{}` is empty or has spaces around it", a.get_ref()));
        } else {
            audiences.push(a.get_ref().clone());
        }
    }
    let forward_jwt = api
        .forward_jwt
        .as_ref()
        .and_then(|f| f.get_ref().validate(&name).map_err(|m| problem(&mut errors, at(f.span()), m)).ok());
    let profile = Profile::named(api.profile.get_ref());
    let mut claims = profile.map(Profile::claim_mapping);
    if claims.is_none() {
        problem(
            &mut errors,
            at(api.profile.span()),
            format!("unknown profile `{}` (known: {})", api.profile.get_ref(), Profile::names().join(", ")),
        );
    }
    if let Some(mapping) = claims.as_mut() {
        let c = &parsed.claims;
        let path = |errors: &mut Vec<ConfigError>, v: &Option<Spanned<String>>| -> Option<ClaimPath> {
            let v = v.as_ref()?;
            let path =
                ClaimPath::parse(v.get_ref()).map_err(|m| errors.push(ConfigError::new(file, at(v.span()), m))).ok()?;
            if crate::introspection::STANDARD_MEMBERS.contains(&path.first()) {
                let msg = format!(
                    "claim path `{}` starts at the standard member `{}`: claim paths address extension claims (the gateway reads the standard ones itself)",
                    path.as_str(),
                    path.first()
                );
                errors.push(ConfigError::new(file, at(v.span()), msg));
                return None;
            }
            Some(path)
        };
        // A claim path, or `false`: not in the server's responses (`None`); unset: the profile's.
        let optional = |errors: &mut Vec<ConfigError>,
                        key: &str,
                        v: &Option<Spanned<toml::Value>>,
                        current: &mut Option<ClaimPath>| {
            let Some(v) = v else { return };
            match v.get_ref() {
                toml::Value::String(text) => {
                    if let Some(p) = path(errors, &Some(Spanned::new(v.span(), text.clone()))) {
                        *current = Some(p);
                    }
                }
                toml::Value::Boolean(false) => *current = None,
                other => errors.push(ConfigError::new(
                    file,
                    at(v.span()),
                    format!(
                        "claims.{key} must be a claim path, or false when the server's responses carry none (found {other})"
                    ),
                )),
            }
        };
        if let Some(p) = path(&mut errors, &c.consent_id) {
            mapping.consent_id = p;
        }
        optional(&mut errors, "consent_type", &c.consent_type, &mut mapping.consent_type);
        optional(&mut errors, "status", &c.status, &mut mapping.status);
        optional(&mut errors, "permissions", &c.permissions, &mut mapping.permissions);
        optional(&mut errors, "accounts", &c.accounts, &mut mapping.accounts);
        optional(&mut errors, "expiration", &c.expiration, &mut mapping.expiration);
        if let Some(g) = &c.granting_status {
            mapping.granting_status = g.clone();
        }
        if mapping.status.is_some() && mapping.granting_status.is_empty() {
            let line = source.find("granting_status").map(|i| line_of(source, i));
            problem(&mut errors, line, "claims.granting_status is empty: no consent could ever be granted".into());
        }
    }

    // The profile's ready-made routes first (when asked for); a file route with the same
    // path replaces them for the methods it names (`enabled = false` just removes them).
    let mut sources: Vec<RouteSource> = Vec::new();
    let profile_file;
    let profile_routes: Option<PolicyRoutes> = match (api.profile_routes, profile) {
        (true, Some(p)) => {
            profile_file = PathBuf::from(format!("<built-in profile {}>", p.name));
            Some(toml::from_str(p.routes).expect("built-in profile routes parse"))
        }
        _ => {
            profile_file = PathBuf::new();
            None
        }
    };
    let profile_text = profile.map(|p| p.routes).unwrap_or("");
    if let Some(builtin) = &profile_routes {
        for r in &builtin.route {
            let overridden = parsed.route.iter().any(|own| {
                own.get_ref().path.get_ref() == r.get_ref().path.get_ref()
                    && own.get_ref().methods.iter().any(|m| r.get_ref().methods.contains(m))
            });
            if !overridden {
                sources.push((&profile_file, profile_text, r, None));
            }
        }
    }
    for r in &parsed.route {
        if r.get_ref().enabled {
            let replaced = profile_routes.iter().flat_map(|b| &b.route).find(|p| {
                p.get_ref().path.get_ref() == r.get_ref().path.get_ref()
                    && r.get_ref().methods.iter().any(|m| p.get_ref().methods.contains(m))
            });
            sources.push((file, source, r, replaced.and_then(|p| p.get_ref().consent_types.clone())));
        }
    }
    if sources.is_empty() && claims.is_some() {
        problem(
            &mut errors,
            at(api.prefix.span()),
            "no [[route]] (and no profile_routes): every request to this API would be refused".into(),
        );
    }
    let vocabulary = profile.and_then(|p| p.permissions);
    let mut warnings = prefix_warnings;
    let mut routes: Vec<Route> = Vec::new();
    let mut router = Router::default();
    for (origin, text, spanned, inherited_kinds) in sources {
        let line = line_of(text, spanned.span().start);
        let r = spanned.get_ref();
        let e = Effective::of(r, &api.defaults);
        let route_problem = |errors: &mut Vec<ConfigError>, msg: String| {
            errors.push(ConfigError::new(origin, Some(line), format!("route `{}`: {msg}", r.path.get_ref())));
        };
        let template = match PathTemplate::parse(r.path.get_ref()) {
            Ok(t) => t,
            Err(m) => {
                errors.push(ConfigError::new(origin, Some(line_of(text, r.path.span().start)), m));
                continue;
            }
        };
        let mut methods = Vec::new();
        for m in &r.methods {
            match http::Method::from_bytes(m.as_bytes()) {
                Ok(method) if m.chars().all(|c| c.is_ascii_uppercase()) => methods.push(method),
                _ => route_problem(&mut errors, format!("`{m}` is not an HTTP method (write it in capitals)")),
            }
        }
        if methods.is_empty() && r.methods.is_empty() {
            route_problem(&mut errors, "methods is empty".into());
        }
        if let Some(p) = &r.account_param {
            if template.catch_all() == Some(p.as_str()) {
                route_problem(&mut errors, format!("account_param `{p}` is a catch-all: it names one segment"));
            } else if !template.has_param(p) {
                route_problem(&mut errors, format!("account_param `{p}` is not a parameter of the path"));
            }
            if claims.as_ref().is_some_and(|c| c.accounts.is_none()) {
                route_problem(
                    &mut errors,
                    format!("account_param `{p}` needs the consent's accounts, but claims.accounts is false"),
                );
            }
        }
        for glob in template.glob_like_literals() {
            warnings.push(ConfigError::new(
                origin,
                Some(line_of(text, r.path.span().start)),
                format!(
                    "route `{}`: segment `{glob}` is a literal and matches only itself; a catch-all is written `{{Name...}}` as the last segment",
                    r.path.get_ref()
                ),
            ));
        }
        let binding = e.binding;
        if r.public {
            let demands = !e.scopes.is_empty()
                || !e.scopes_any.is_empty()
                || !r.permissions.is_empty()
                || !r.permissions_any.groups().is_empty()
                || r.account_param.is_some()
                || r.body_consent.is_some()
                || !e.client_ids.is_empty()
                || !e.acr_values.is_empty();
            if demands || e.consent {
                route_problem(&mut errors, "a public route takes no token: drop scopes, permissions, accounts, clients, acr and set `consent = false`".into());
            }
            warnings.push(ConfigError::new(
                origin,
                Some(line),
                format!("route `{}` is public: no token is checked", r.path.get_ref()),
            ));
        } else if binding == Binding::None {
            warnings.push(ConfigError::new(
                origin,
                Some(line),
                format!("route `{}`: binding = \"none\" takes tokens bound to no certificate or key; FAPI routes need mtls or dpop", r.path.get_ref()),
            ));
        }
        let permissions_any = r.permissions_any.groups();
        let needs_permissions = !r.permissions.is_empty() || !permissions_any.is_empty();
        if needs_permissions && !e.consent {
            route_problem(&mut errors, "permissions need `consent = true`".into());
        }
        if let Some(known) = vocabulary {
            for p in r.permissions.iter().chain(permissions_any.iter().flatten()) {
                if !known.contains(&p.as_str()) {
                    route_problem(
                        &mut errors,
                        format!("unknown permission `{p}` for profile {}", api.profile.get_ref()),
                    );
                }
            }
        }
        for scope in e.scopes.iter().chain(&e.scopes_any) {
            if scope.is_empty() || scope.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
                route_problem(&mut errors, format!("scope `{scope}` is not a valid scope token"));
            }
        }
        let cache_ttl = match e.cache_ttl_seconds {
            None => None,
            Some(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Some(std::time::Duration::from_secs_f64(v)),
            Some(v) => {
                route_problem(&mut errors, format!("cache_ttl_seconds {v} must be between 0 and 86400"));
                None
            }
        };
        let body_consent = r.body_consent.as_ref().and_then(|p| {
            ClaimPath::parse(p).map_err(|m| route_problem(&mut errors, format!("body_consent: {m}"))).ok()
        });
        if body_consent.is_some() && !e.consent {
            route_problem(&mut errors, "body_consent needs `consent = true`".into());
        }
        let consent_types = r.consent_types.clone().or(inherited_kinds).or(e.consent_types.clone()).unwrap_or_default();
        if !consent_types.is_empty() {
            if !e.consent {
                route_problem(&mut errors, "consent_types need `consent = true`".into());
            }
            if claims.as_ref().is_some_and(|c| c.consent_type.is_none()) {
                route_problem(
                    &mut errors,
                    format!(
                        "consent_types: profile {} has no consent kind claim; set [claims] consent_type",
                        api.profile.get_ref()
                    ),
                );
            }
            if let Some(known) = profile.and_then(|p| p.consent_kinds) {
                for k in consent_types.iter().filter(|k| !known.contains(&k.as_str())) {
                    route_problem(
                        &mut errors,
                        format!(
                            "unknown consent kind `{k}` for profile {} (known: {})",
                            api.profile.get_ref(),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        if r.consent_status.is_some() && claims.as_ref().is_some_and(|c| c.status.is_none()) {
            route_problem(
                &mut errors,
                "consent_status: the API's claims.status is false, so no status is checked".into(),
            );
        }
        if e.consent_status.as_ref().is_some_and(|s| s.is_empty()) {
            route_problem(&mut errors, "consent_status is empty: no consent could ever pass".into());
        }
        // A route that reads its body (body_consent) reads at most MAX_BODY_BYTES.
        let max_body_bytes = r.max_body_bytes.unwrap_or(MAX_BODY_BYTES);
        if r.body_consent.is_some() && max_body_bytes > MAX_BODY_BYTES {
            route_problem(
                &mut errors,
                format!("a route with body_consent reads at most {MAX_BODY_BYTES} bytes (max_body_bytes)"),
            );
        }
        let index = routes.len();
        for method in &methods {
            match router.insert(method.clone(), &template, index) {
                Ok(()) => {}
                Err(InsertError::Overlap(other)) => route_problem(
                    &mut errors,
                    format!(
                        "{method} overlaps the route `{}` at {}:{}",
                        routes[other].path,
                        routes[other].file.display(),
                        routes[other].line
                    ),
                ),
                Err(InsertError::ParamName { existing, new }) => route_problem(
                    &mut errors,
                    format!("parameter `{{{new}}}` stands where another route has `{{{existing}}}`: use one name"),
                ),
            }
        }
        routes.push(Route {
            methods,
            path: r.path.get_ref().clone(),
            scopes: e.scopes,
            scopes_any: e.scopes_any,
            permissions: r.permissions.clone(),
            permissions_any,
            require_consent: e.consent,
            consent_types,
            request_body: r.request_body,
            path_parameters: e.path_parameters,
            account_param: r.account_param.clone(),
            binding,
            cache_ttl,
            client_ids: e.client_ids,
            acr_values: e.acr_values,
            consent_status: e.consent_status,
            body_consent,
            max_body_bytes: max_body_bytes.min(MAX_BODY_BYTES),
            body_limit: r.max_body_bytes.map(|n| n as u64),
            public: r.public,
            file: origin.to_path_buf(),
            line,
        });
    }

    let route_paths: Vec<&str> = routes.iter().map(|r| r.path.as_str()).collect();
    let limits =
        crate::traffic::file::compile(file, source, &parsed.rate_limit, &parsed.quota, &route_paths, &mut errors);
    let unattended_access =
        crate::traffic::file::compile_unattended(file, source, parsed.unattended_access.as_ref(), profile, &mut errors);
    match (errors.is_empty(), upstream, claims, authorization_server) {
        (true, Some(upstream), Some(claims), Some(authorization_server)) => Ok(Api {
            name,
            file: file.to_path_buf(),
            line: line_of(source, api.prefix.span().start),
            prefix,
            upstream,
            authorization_server,
            audiences,
            claims,
            forward_jwt,
            routes,
            warnings,
            router,
            limits,
            unattended_access,
        }),
        _ => Err(errors),
    }
}
