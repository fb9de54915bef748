//! The policy file's `[[rate_limit]]`, `[[quota]]` and `[unattended_access]` sections, and
//! their checks (every mistake with file and line).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Algorithm, KeyPart, LimitRule, UnattendedAccess};
use crate::diagnostics::{line_of, ConfigError};
use crate::policy::profile::Profile;

/// `[[rate_limit]]`: a token bucket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RateLimitSection {
    name: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    rate: u64,
    #[serde(default = "second")]
    per: String,
    burst: Option<u64>,
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
}

/// `[[quota]]`: a fixed window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaSection {
    name: Option<String>,
    #[serde(default)]
    key: Vec<String>,
    limit: u64,
    per: String,
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    routes: Vec<String>,
}

/// `[unattended_access]`: the profile's PSD2 rule, switched on for this API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UnattendedSection {
    #[serde(default = "yes")]
    enabled: bool,
    max_requests: Option<u32>,
    window_seconds: Option<u64>,
}

fn second() -> String {
    "second".into()
}
fn yes() -> bool {
    true
}

fn period(per: &str) -> Option<u64> {
    match per {
        "second" => Some(1),
        "minute" => Some(60),
        "hour" => Some(3600),
        "day" => Some(86_400),
        _ => None,
    }
}

/// What a rule section shares, whichever its kind.
struct Common<'a> {
    kind: &'static str,
    name: &'a Option<String>,
    key: &'a [String],
    client_ids: &'a [String],
    routes: &'a [String],
}

/// Compiles an API's limit sections; `route_paths` are its routes' templates.
pub(crate) fn compile(
    file: &Path,
    source: &str,
    rate_limits: &[Spanned<RateLimitSection>],
    quotas: &[Spanned<QuotaSection>],
    route_paths: &[&str],
    errors: &mut Vec<ConfigError>,
) -> Vec<LimitRule> {
    let mut rules: Vec<LimitRule> = Vec::new();
    let mut sections: Vec<(usize, Common, Result<Algorithm, String>)> = Vec::new();
    for s in rate_limits {
        let r = s.get_ref();
        let algorithm = match (period(&r.per), r.rate, r.burst) {
            (None, _, _) => Err(format!("per = \"{}\" must be second, minute, hour or day", r.per)),
            (_, 0, _) => Err("rate must be at least 1".into()),
            (_, _, Some(0)) => Err("burst must be at least 1".into()),
            (Some(p), rate, burst) => {
                Ok(Algorithm::TokenBucket { rate, per: Duration::from_secs(p), burst: burst.unwrap_or(rate) })
            }
        };
        let common = Common { kind: "rate", name: &r.name, key: &r.key, client_ids: &r.client_ids, routes: &r.routes };
        sections.push((line_of(source, s.span().start), common, algorithm));
    }
    for s in quotas {
        let q = s.get_ref();
        let algorithm = match (period(&q.per), q.limit) {
            (None, _) => Err(format!("per = \"{}\" must be second, minute, hour or day", q.per)),
            (_, 0) => Err("limit must be at least 1".into()),
            (Some(window), limit) => Ok(Algorithm::FixedWindow { limit, window }),
        };
        let common = Common { kind: "quota", name: &q.name, key: &q.key, client_ids: &q.client_ids, routes: &q.routes };
        sections.push((line_of(source, s.span().start), common, algorithm));
    }
    let mut counts = [0usize; 2];
    for (line, c, algorithm) in sections {
        let n = &mut counts[usize::from(c.kind == "quota")];
        *n += 1;
        let name = c.name.clone().unwrap_or_else(|| format!("{}-{n}", c.kind));
        let mut problem = |msg: String| {
            errors.push(ConfigError::new(file, Some(line), format!("{} `{name}`: {msg}", section_name(c.kind))));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            problem("the name may use letters, digits, `-`, `_` and `.` only".into());
        }
        if rules.iter().any(|r| r.name == name) {
            problem("the name is used twice in this API".into());
        }
        let mut key = Vec::new();
        for k in c.key {
            let part = match k.as_str() {
                "client_id" => KeyPart::ClientId,
                "consent" => KeyPart::Consent,
                "certificate" => KeyPart::Certificate,
                "route" => KeyPart::Route,
                other => {
                    problem(format!("key `{other}` is not one of client_id, consent, certificate, route"));
                    continue;
                }
            };
            if key.contains(&part) {
                problem(format!("key `{k}` is named twice"));
            }
            key.push(part);
        }
        for r in c.routes.iter().filter(|r| !route_paths.contains(&r.as_str())) {
            problem(format!("routes: `{r}` is not a route of this API"));
        }
        if c.client_ids.iter().any(|c| c.is_empty()) {
            problem("client_ids: an empty client id".into());
        }
        match algorithm {
            Ok(algorithm) => rules.push(LimitRule {
                name,
                key,
                algorithm,
                client_ids: c.client_ids.to_vec(),
                routes: c.routes.to_vec(),
            }),
            Err(m) => problem(m),
        }
    }
    rules
}

fn section_name(kind: &str) -> &'static str {
    if kind == "quota" {
        "[[quota]]"
    } else {
        "[[rate_limit]]"
    }
}

/// The API's unattended-access limit: the profile's rule, with the file's numbers.
pub(crate) fn compile_unattended(
    file: &Path,
    source: &str,
    section: Option<&Spanned<UnattendedSection>>,
    profile: Option<&Profile>,
    errors: &mut Vec<ConfigError>,
) -> Option<UnattendedAccess> {
    let spanned = section?;
    let s = spanned.get_ref();
    let line = Some(line_of(source, spanned.span().start));
    let profile = profile?;
    let Some(rule) = &profile.unattended_access else {
        let with: Vec<&str> =
            crate::policy::profile::PROFILES.iter().filter(|p| p.unattended_access.is_some()).map(|p| p.name).collect();
        errors.push(ConfigError::new(
            file,
            line,
            format!(
                "[unattended_access]: profile {} has no unattended-access rule (profiles with one: {})",
                profile.name,
                with.join(", ")
            ),
        ));
        return None;
    };
    let max_requests = s.max_requests.unwrap_or(rule.max_requests);
    let window_seconds = s.window_seconds.unwrap_or(rule.window_seconds);
    if !(1..=1_000).contains(&max_requests) {
        errors.push(ConfigError::new(file, line, "[unattended_access] max_requests must be between 1 and 1000"));
    }
    if !(1..=31 * 86_400).contains(&window_seconds) {
        errors.push(ConfigError::new(
            file,
            line,
            "[unattended_access] window_seconds must be between 1 and 2678400 (31 days)",
        ));
    }
    s.enabled.then(|| UnattendedAccess {
        max_requests,
        window: Duration::from_secs(window_seconds),
        consent_types: rule.consent_kinds.iter().map(|k| k.to_string()).collect(),
    })
}
