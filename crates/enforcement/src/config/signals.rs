//! `[signals]`: the receiver of Security Event Tokens on the admin listener, and the
//! transmitters it accepts them from.
//!
//! ```toml
//! [signals]
//! path = "/signals/events"             # on the admin listener
//! max_age_seconds = 300                # oldest iat accepted; jtis are remembered as long
//! replay_capacity = 100000
//!
//! [[signals.transmitters]]
//! name = "bank-as"
//! issuer = "https://as.bank.example"
//! audience = "https://gateway.bank.example/signals"
//! jwks_uri = "https://as.bank.example/jwks"   # or jwks_file = "transmitter-jwks.json"
//! ca = "certs/ca.pem"                  # trusted for jwks_uri (system roots otherwise)
//! authorization_servers = ["bank-as"]  # whose caches its events concern (default: all)
//! ```

use std::collections::BTreeSet;

use serde::Deserialize;
use toml::Spanned;

use crate::diagnostics::Diagnostics;
use crate::policy::ClaimPath;
use crate::secrets;
use crate::signals::mapping::IdPath;
use crate::signals::{EventMapping, KeySource, MappedKind, OpaqueSubjects, SignalsConfig, TransmitterConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignalsSection {
    #[serde(default = "default_path")]
    path: Spanned<String>,
    #[serde(default = "default_max_age")]
    max_age_seconds: Spanned<u64>,
    #[serde(default = "default_replay_capacity")]
    replay_capacity: u64,
    #[serde(default)]
    transmitters: Vec<TransmitterSection>,
}

fn default_path() -> Spanned<String> {
    Spanned::new(0..0, "/signals/events".into())
}
fn default_max_age() -> Spanned<u64> {
    Spanned::new(0..0, 300)
}
fn default_replay_capacity() -> u64 {
    100_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransmitterSection {
    name: Option<String>,
    issuer: Spanned<String>,
    audience: Spanned<String>,
    jwks_uri: Option<Spanned<String>>,
    jwks_file: Option<Spanned<String>>,
    ca: Option<Spanned<String>>,
    authorization_servers: Option<Vec<Spanned<String>>>,
    bearer_secret: Option<Spanned<String>>,
    bearer_secret_file: Option<Spanned<String>>,
    #[serde(default = "default_opaque")]
    opaque_subjects: OpaqueSubjectsName,
    #[serde(default)]
    events: Vec<EventSection>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OpaqueSubjectsName {
    Subject,
    Token,
}

fn default_opaque() -> OpaqueSubjectsName {
    OpaqueSubjectsName::Subject
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSection {
    #[serde(rename = "type")]
    event_type: Spanned<String>,
    revokes: MappedKind,
    claim: Option<Spanned<String>>,
    set_claim: Option<Spanned<String>>,
}

/// Validates `[signals]` (`servers`: the configured authorization servers' names).
pub(super) fn validate(
    s: &SignalsSection,
    servers: &[String],
    has_admin: bool,
    d: &mut Diagnostics,
) -> Option<SignalsConfig> {
    let before = d.errors.len();
    if !has_admin {
        d.error(Some(s.path.span()), "[signals] needs an [admin] section: the receiver listens on the admin listener");
    }
    let path = s.path.get_ref();
    let reserved = ["/healthz", "/readyz", "/metrics", "/revocations"];
    if !path.starts_with('/') || path.contains(['?', '#', ' ', '{', '}', '*']) || reserved.contains(&path.as_str()) {
        d.error(
            Some(s.path.span()),
            format!("signals.path `{path}` must be a plain absolute path, not an admin endpoint's"),
        );
    }
    if !(1..=86_400).contains(s.max_age_seconds.get_ref()) {
        d.error(Some(s.max_age_seconds.span()), "signals.max_age_seconds must be between 1 and 86400");
    }
    if s.transmitters.is_empty() {
        d.error(Some(s.path.span()), "[signals] needs at least one [[signals.transmitters]]");
    }
    let mut issuers = BTreeSet::new();
    let transmitters: Vec<TransmitterConfig> =
        s.transmitters.iter().filter_map(|t| transmitter(t, servers, &mut issuers, d)).collect();
    (d.errors.len() == before).then(|| SignalsConfig {
        path: path.clone(),
        max_age: std::time::Duration::from_secs(*s.max_age_seconds.get_ref()),
        replay_capacity: s.replay_capacity.max(1),
        transmitters,
    })
}

fn transmitter(
    t: &TransmitterSection,
    servers: &[String],
    issuers: &mut BTreeSet<String>,
    d: &mut Diagnostics,
) -> Option<TransmitterConfig> {
    let issuer = t.issuer.get_ref().clone();
    let name = t.name.clone().unwrap_or_else(|| issuer.clone());
    let at = |s: &Spanned<String>| Some(s.span());
    if issuer.is_empty() {
        d.error(at(&t.issuer), "signals transmitter: issuer is empty");
    } else if !issuers.insert(issuer.clone()) {
        d.error(at(&t.issuer), format!("signals transmitter `{name}`: issuer `{issuer}` is given twice"));
    }
    if t.audience.get_ref().is_empty() {
        d.error(at(&t.audience), format!("signals transmitter `{name}`: audience is empty"));
    }
    let keys = match (&t.jwks_uri, &t.jwks_file) {
        (Some(uri), None) => match uri.get_ref().parse::<http::Uri>() {
            Ok(u) if matches!(u.scheme_str(), Some("https") | Some("http")) && u.host().is_some() => {
                Some(KeySource::Uri(uri.get_ref().clone()))
            }
            _ => {
                d.error(
                    at(uri),
                    format!("signals transmitter `{name}`: jwks_uri `{}` is not an http(s) URL", uri.get_ref()),
                );
                None
            }
        },
        (None, Some(file)) => {
            let path = d.base.join(file.get_ref());
            match std::fs::read(&path).map_err(|e| e.to_string()).and_then(|b| {
                serde_json::from_slice::<jsonwebtoken::jwk::JwkSet>(&b).map_err(|e| format!("not a JWK set: {e}"))
            }) {
                Ok(set) if !set.keys.is_empty() => Some(KeySource::File(set)),
                Ok(_) => {
                    d.error(at(file), format!("signals transmitter `{name}`: {} has no keys", path.display()));
                    None
                }
                Err(e) => {
                    d.error(at(file), format!("signals transmitter `{name}`: jwks_file {}: {e}", path.display()));
                    None
                }
            }
        }
        _ => {
            d.error(at(&t.issuer), format!("signals transmitter `{name}`: give jwks_uri or jwks_file (one of them)"));
            None
        }
    };
    let ca = t.ca.as_ref().and_then(|ca| {
        let path = d.base.join(ca.get_ref());
        if path.is_file() {
            Some(path)
        } else {
            d.error(at(ca), format!("signals transmitter `{name}`: ca file {} not found", path.display()));
            None
        }
    });
    let (chosen, all_servers) = match &t.authorization_servers {
        None => (servers.to_vec(), true),
        Some(list) => {
            for s in list {
                if !servers.contains(s.get_ref()) {
                    d.error(
                        at(s),
                        format!("signals transmitter `{name}`: unknown authorization server `{}`", s.get_ref()),
                    );
                }
            }
            if list.is_empty() {
                d.error(at(&t.issuer), format!("signals transmitter `{name}`: authorization_servers is empty"));
            }
            let chosen: Vec<String> = list.iter().map(|s| s.get_ref().clone()).collect();
            let all = servers.iter().all(|s| chosen.contains(s));
            (chosen, all)
        }
    };
    let span = t.bearer_secret.as_ref().or(t.bearer_secret_file.as_ref()).map(|s| s.span());
    let bearer_secret = match secrets::resolve(
        t.bearer_secret.as_ref().map(|s| s.get_ref().as_str()),
        t.bearer_secret_file.as_ref().map(|f| d.base.join(f.get_ref())).as_deref(),
        "signals.transmitters.bearer_secret",
    ) {
        Ok(Some(s)) if s.len() < 16 => {
            d.error(span, "signals.transmitters.bearer_secret must be at least 16 characters");
            None
        }
        Ok(s) => s,
        Err(m) => {
            d.error(span, m);
            None
        }
    };
    let mut events = Vec::new();
    for e in &t.events {
        let parse = |p: &Spanned<String>, d: &mut Diagnostics| match ClaimPath::parse(p.get_ref()) {
            Ok(path) => Some(path),
            Err(m) => {
                d.error(Some(p.span()), format!("signals event `{}`: {m}", e.event_type.get_ref()));
                None
            }
        };
        let id = match (&e.claim, &e.set_claim) {
            (Some(c), None) => parse(c, d).map(IdPath::Event),
            (None, Some(c)) => parse(c, d).map(IdPath::Set),
            _ => {
                d.error(
                    Some(e.event_type.span()),
                    format!(
                        "signals event `{}`: give claim (in the event) or set_claim (in the SET), one of them",
                        e.event_type.get_ref()
                    ),
                );
                None
            }
        };
        if e.event_type.get_ref().is_empty() {
            d.error(Some(e.event_type.span()), "signals event: type is empty");
        }
        if t.events.iter().filter(|o| o.event_type.get_ref() == e.event_type.get_ref()).count() > 1 {
            d.error(Some(e.event_type.span()), format!("signals event `{}` is mapped twice", e.event_type.get_ref()));
        }
        if let Some(id) = id {
            events.push(EventMapping { event_type: e.event_type.get_ref().clone(), revokes: e.revokes, id });
        }
    }
    Some(TransmitterConfig {
        name,
        issuer,
        audience: t.audience.get_ref().clone(),
        keys: keys?,
        ca,
        servers: chosen,
        all_servers,
        bearer_secret,
        opaque_subjects: match t.opaque_subjects {
            OpaqueSubjectsName::Subject => OpaqueSubjects::Subject,
            OpaqueSubjectsName::Token => OpaqueSubjects::Token,
        },
        events,
    })
}
