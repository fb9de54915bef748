//! Standard revocation signals in: RFC 8417 Security Event Tokens from an authorization
//! server or consent store, delivered by RFC 8935 push, verified ([`set`]) and translated
//! into [`Revocation`]s, one file per event family: [`caep`] (OpenID CAEP
//! `session-revoked`, `credential-change`), [`openbanking`] (Open Banking UK
//! `consent-authorization-revoked`) and [`mapping`] (the configuration's own event types).
//!
//! Pure decisions, no server: the gateway's admin listener hands a pushed body to
//! [`SignalReceiver::receive`] and applies what comes back through its one revocation path.

pub mod caep;
mod jwks;
pub mod mapping;
pub mod openbanking;
pub mod set;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::jwk::JwkSet;
use moka::sync::Cache;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::revocation::{Revocation, Revoked};
pub use mapping::{EventMapping, MappedKind};

/// The validated `[signals]` section.
#[derive(Debug, Clone)]
pub struct SignalsConfig {
    /// Path of the RFC 8935 push endpoint on the admin listener.
    pub path: String,
    /// Oldest a SET may be, by its `iat`; `jti`s are remembered as long.
    pub max_age: Duration,
    /// Most `jti`s remembered at once.
    pub replay_capacity: u64,
    /// Who may send SETs, told apart by `iss`.
    pub transmitters: Vec<TransmitterConfig>,
}

/// One transmitter: an authorization server or consent store that signs SETs.
#[derive(Debug, Clone)]
pub struct TransmitterConfig {
    /// A name for logs (the issuer by default).
    pub name: String,
    /// The SETs' `iss`.
    pub issuer: String,
    /// What the SETs' `aud` must name: this receiver.
    pub audience: String,
    /// Where the transmitter's public keys are.
    pub keys: KeySource,
    /// PEM bundle trusted for `jwks_uri`'s TLS certificate (system roots otherwise).
    pub ca: Option<PathBuf>,
    /// The authorization servers (names in gateway.toml) whose caches its events concern.
    pub servers: Vec<String>,
    /// Whether `servers` is every configured server (consent and subject revocations then
    /// name none, so they reach every cache of every replica).
    pub all_servers: bool,
    /// When set, a push must carry `Authorization: Bearer <secret>` as well.
    pub bearer_secret: Option<String>,
    /// What an `opaque` subject identifier names.
    pub opaque_subjects: OpaqueSubjects,
    /// Event types of the transmitter's own, and what they revoke.
    pub events: Vec<EventMapping>,
}

/// Where a transmitter's keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// Fetched (at start, and again for an unknown `kid`, at most every few seconds).
    Uri(String),
    /// Read from a file when the configuration was loaded.
    File(JwkSet),
}

/// What a CAEP subject of format `opaque` names (RFC 9493 leaves its meaning to the
/// transmitter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueSubjects {
    /// The `sub` of the tokens (the customer, as introspection reports it).
    Subject,
    /// An access token itself, as the server issued it (an opaque token is its own
    /// identifier, as in RFC 7009): the gateway keeps only its digest.
    Token,
}

/// The RFC 8935 §2.4 error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not a SET, or an event not as its definition (or this receiver) understands it.
    InvalidRequest,
    /// The signing key or algorithm is unacceptable, or the signature does not verify.
    InvalidKey,
    /// No transmitter with this `iss` is configured.
    InvalidIssuer,
    /// `aud` does not name this receiver.
    InvalidAudience,
    /// The push's own authentication (bearer secret) failed.
    AuthenticationFailed,
    /// The transmitter may not send this.
    AccessDenied,
}

impl ErrorCode {
    /// The code as written in the `err` member.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::InvalidIssuer => "invalid_issuer",
            ErrorCode::InvalidAudience => "invalid_audience",
            ErrorCode::AuthenticationFailed => "authentication_failed",
            ErrorCode::AccessDenied => "access_denied",
        }
    }
}

/// Why a pushed SET was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalError {
    /// Refused: answered 400 with `{"err": code, "description": …}` (RFC 8935 §2.4).
    Refused {
        /// The RFC 8935 code.
        code: ErrorCode,
        /// For the transmitter's operator.
        description: String,
    },
    /// The transmitter's keys cannot be fetched now: answered 503, so the transmitter
    /// delivers the SET again later rather than dropping it.
    KeysUnavailable(String),
}

impl SignalError {
    pub(crate) fn refused(code: ErrorCode, description: impl Into<String>) -> SignalError {
        SignalError::Refused { code, description: description.into() }
    }
}

fn invalid_request(description: impl Into<String>) -> SignalError {
    SignalError::refused(ErrorCode::InvalidRequest, description)
}

/// A SET accepted: who sent it, and what it revokes.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The transmitter's name.
    pub transmitter: String,
    /// The SET's `jti` (for logs).
    pub jti: String,
    /// Its event types.
    pub events: Vec<String>,
    /// What to revoke (empty for informational events such as SSF verification).
    pub revocations: Vec<Revocation>,
}

/// Receives pushed SETs: verifies them against the configured transmitters, refuses
/// replays, and translates their events.
pub struct SignalReceiver {
    path: String,
    max_age: Duration,
    transmitters: Vec<Transmitter>,
    /// SHA-256 of `iss` and `jti` of SETs accepted lately.
    seen: Cache<[u8; 32], ()>,
}

struct Transmitter {
    config: TransmitterConfig,
    keys: jwks::Keys,
}

/// Largest SET accepted; real ones are a few hundred bytes.
pub const MAX_SET_BYTES: usize = 64 * 1024;

impl SignalReceiver {
    /// A receiver for `config` (nothing is fetched yet: see [`SignalReceiver::load_keys`]).
    pub fn new(config: &SignalsConfig) -> Result<SignalReceiver, String> {
        let transmitters = config
            .transmitters
            .iter()
            .map(|t| Ok(Transmitter { keys: jwks::Keys::new(t)?, config: t.clone() }))
            .collect::<Result<Vec<_>, String>>()?;
        Ok(SignalReceiver {
            path: config.path.clone(),
            max_age: config.max_age,
            transmitters,
            seen: Cache::builder()
                .max_capacity(config.replay_capacity)
                .time_to_live(config.max_age + Duration::from_secs(set::SKEW))
                .build(),
        })
    }

    /// The push endpoint's path on the admin listener.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Fetches every transmitter's keys, retrying (1 s, doubling to 30 s) until each has
    /// them. Run at start in a task of its own: the gateway serves meanwhile, and a SET
    /// arriving before its keys is answered 503 (retried by the transmitter).
    pub async fn load_keys(&self) {
        for t in &self.transmitters {
            let mut wait = Duration::from_secs(1);
            loop {
                match t.keys.refresh().await {
                    Ok(n) => {
                        tracing::info!(transmitter = %t.config.name, keys = n, "signal transmitter keys loaded");
                        break;
                    }
                    Err(e) if wait == Duration::from_secs(1) => {
                        // Often the transmitter starting alongside: said once, quietly.
                        tracing::info!(transmitter = %t.config.name, error = %e, "signal transmitter keys not reachable yet; retrying");
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                    Err(e) => {
                        tracing::warn!(transmitter = %t.config.name, error = %e, retry_in_s = wait.as_secs(), "signal transmitter keys unavailable");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
    }

    /// Verifies and translates one pushed SET: `content_type` and `authorization` are the
    /// request's headers, `body` its body. The `jti` is remembered only when the SET is
    /// accepted, so a refused SET, corrected, may be sent again.
    pub async fn receive(
        &self,
        content_type: Option<&str>,
        authorization: Option<&str>,
        body: &[u8],
    ) -> Result<Accepted, SignalError> {
        let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if media != "application/secevent+jwt" && media != "application/jwt" {
            return Err(invalid_request(format!(
                "Content-Type must be application/secevent+jwt (RFC 8935), not `{media}`"
            )));
        }
        if body.len() > MAX_SET_BYTES {
            return Err(invalid_request(format!("a SET is at most {MAX_SET_BYTES} bytes")));
        }
        let jwt = std::str::from_utf8(body).map_err(|_| invalid_request("the body is not a compact JWS"))?.trim();
        let unverified = set::unverified_claims(jwt)?;
        let issuer = unverified.get("iss").and_then(Value::as_str).unwrap_or("");
        let transmitter = self.transmitters.iter().find(|t| t.config.issuer == issuer).ok_or_else(|| {
            SignalError::refused(ErrorCode::InvalidIssuer, format!("no transmitter `{issuer}` is configured"))
        })?;
        if let Some(secret) = &transmitter.config.bearer_secret {
            let presented = authorization.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
            if !constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
                return Err(SignalError::refused(
                    ErrorCode::AuthenticationFailed,
                    "this transmitter's pushes need its bearer secret in Authorization",
                ));
            }
        }
        let claims = set::verify(jwt, &transmitter.config, &transmitter.keys, self.max_age).await?;
        let jti = claims["jti"].as_str().unwrap_or_default().to_string();
        let events: Vec<String> = claims["events"].as_object().map(|e| e.keys().cloned().collect()).unwrap_or_default();
        let revocations = translate(&transmitter.config, &claims)?;
        let mut digest = Sha256::new();
        digest.update(issuer.as_bytes());
        digest.update([0u8]);
        digest.update(jti.as_bytes());
        let entry = self.seen.entry(digest.finalize().into()).or_insert(());
        if !entry.is_fresh() {
            return Err(invalid_request(format!("jti `{jti}` was received already")));
        }
        Ok(Accepted { transmitter: transmitter.config.name.clone(), jti, events, revocations })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Event types that revoke nothing and are accepted as such: SSF stream management and
/// verification, and the Open Banking resource update that accompanies a revocation.
pub const INFORMATIONAL_EVENTS: [&str; 4] = [
    "https://schemas.openid.net/secevent/ssf/event-type/verification",
    "https://schemas.openid.net/secevent/ssf/event-type/stream-updated",
    "https://schemas.openid.net/secevent/risc/event-type/verification",
    openbanking::RESOURCE_UPDATE,
];

/// What one event revokes, before it is addressed to authorization servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every token of a consent.
    Consent(String),
    /// Every token of a subject (`sub`).
    Subject(String),
    /// One access token, as issued.
    Token(String),
}

/// Every revocation the events of a verified SET's `claims` make. All events must be
/// understood (or informational): a SET with one this receiver cannot act on is refused
/// whole, so the transmitter's operator learns of it rather than a revocation being lost.
pub fn translate(t: &TransmitterConfig, claims: &Value) -> Result<Vec<Revocation>, SignalError> {
    let events = claims
        .get("events")
        .and_then(Value::as_object)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| invalid_request("the `events` claim is missing, empty or not an object (RFC 8417 §2.2)"))?;
    let mut targets = Vec::new();
    for (event_type, payload) in events {
        if !payload.is_object() {
            return Err(invalid_request(format!("event `{event_type}`'s payload is not an object")));
        }
        let target = if let Some(m) = t.events.iter().find(|m| m.event_type == *event_type) {
            Some(m.target(payload, claims).map_err(invalid_request)?)
        } else if caep::EVENTS.contains(&event_type.as_str()) {
            Some(
                caep::target(payload, claims, t.opaque_subjects)
                    .map_err(|e| invalid_request(format!("{event_type}: {e}")))?,
            )
        } else if event_type == openbanking::CONSENT_AUTHORIZATION_REVOKED {
            Some(openbanking::target(payload, claims).map_err(|e| invalid_request(format!("{event_type}: {e}")))?)
        } else if INFORMATIONAL_EVENTS.contains(&event_type.as_str()) {
            None
        } else {
            return Err(invalid_request(format!(
                "event type `{event_type}` is not understood by this receiver (map it in [[signals.transmitters.events]])"
            )));
        };
        targets.extend(target);
    }
    Ok(addressed(t, targets))
}

/// Addresses targets to the transmitter's authorization servers.
fn addressed(t: &TransmitterConfig, targets: Vec<Target>) -> Vec<Revocation> {
    let mut out = Vec::new();
    for target in targets {
        let each = |revoked: &dyn Fn(&str) -> Revoked, out: &mut Vec<Revocation>| {
            for server in &t.servers {
                out.push(Revocation { server: Some(server.clone()), revoked: revoked(server) });
            }
        };
        match target {
            Target::Consent(id) if t.all_servers => {
                out.push(Revocation { server: None, revoked: Revoked::Consent(id) })
            }
            Target::Subject(s) if t.all_servers => out.push(Revocation { server: None, revoked: Revoked::Subject(s) }),
            Target::Consent(id) => each(&|_| Revoked::Consent(id.clone()), &mut out),
            Target::Subject(s) => each(&|_| Revoked::Subject(s.clone()), &mut out),
            // A token's key depends on its server: one per server.
            Target::Token(token) => {
                each(&|server| Revoked::Token(crate::cache::TokenKey::new(server, &token)), &mut out)
            }
        }
    }
    out
}
