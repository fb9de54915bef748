//! A transmitter's public keys: from a file, or fetched from its `jwks_uri` at start and
//! again when a SET names an unknown `kid` (at most every few seconds: a flood of made-up
//! `kid`s must not become a flood of fetches).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use super::{KeySource, TransmitterConfig};

/// Least time between two fetches for unknown keys.
pub(super) const REFETCH_AFTER: Duration = Duration::from_secs(5);
/// Largest JWKS accepted.
const MAX_JWKS_BYTES: usize = 256 * 1024;

pub(super) enum KeyError {
    /// The key set is known and has no such key.
    Unknown(String),
    /// The key set cannot be fetched now.
    Unavailable(String),
}

pub(super) struct Keys {
    uri: Option<String>,
    client: Option<reqwest::Client>,
    /// The set, and when it was last fetched.
    state: Mutex<(Option<Arc<JwkSet>>, Option<Instant>)>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Keys {
    pub(super) fn new(t: &TransmitterConfig) -> Result<Keys, String> {
        match &t.keys {
            KeySource::File(set) => {
                Ok(Keys { uri: None, client: None, state: Mutex::new((Some(Arc::new(set.clone())), None)) })
            }
            KeySource::Uri(uri) => {
                let mut builder = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .connect_timeout(Duration::from_secs(2))
                    .redirect(reqwest::redirect::Policy::none());
                if let Some(ca) = &t.ca {
                    let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem)
                        .map_err(|e| format!("{} is not a PEM certificate bundle: {e}", ca.display()))?;
                    builder = builder.tls_certs_only(certs);
                }
                let client = builder.build().map_err(|e| format!("cannot build the JWKS client: {e}"))?;
                Ok(Keys { uri: Some(uri.clone()), client: Some(client), state: Mutex::new((None, None)) })
            }
        }
    }

    /// Fetches the set now (nothing to do for a file); how many keys it has.
    pub(super) async fn refresh(&self) -> Result<usize, String> {
        let (Some(uri), Some(client)) = (&self.uri, &self.client) else {
            return Ok(lock(&self.state).0.as_ref().map_or(0, |s| s.keys.len()));
        };
        lock(&self.state).1 = Some(Instant::now());
        let response = client.get(uri).send().await.map_err(|e| error_chain(&e))?;
        if !response.status().is_success() {
            return Err(format!("{uri} answered {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n as usize > MAX_JWKS_BYTES) {
            return Err(format!("{uri}: the key set is over {MAX_JWKS_BYTES} bytes"));
        }
        let body = response.bytes().await.map_err(|e| error_chain(&e))?;
        let set: JwkSet = serde_json::from_slice(&body[..body.len().min(MAX_JWKS_BYTES)])
            .map_err(|e| format!("{uri} is not a JWK set: {e}"))?;
        let n = set.keys.len();
        lock(&self.state).0 = Some(Arc::new(set));
        Ok(n)
    }

    /// The key `kid` names (without a `kid`: the only key of the set).
    pub(super) async fn find(&self, kid: Option<&str>) -> Result<Jwk, KeyError> {
        let pick = |set: &JwkSet| match kid {
            Some(k) => set.find(k).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        };
        let (known, may_fetch) = {
            let state = lock(&self.state);
            if let Some(found) = state.0.as_deref().and_then(pick) {
                return Ok(found);
            }
            (state.0.is_some(), self.uri.is_some() && state.1.is_none_or(|t| t.elapsed() >= REFETCH_AFTER))
        };
        let unknown = || match kid {
            Some(k) => KeyError::Unknown(format!("no key `{k}` in the transmitter's key set")),
            None => KeyError::Unknown("no kid, and the transmitter's key set has more than one key".into()),
        };
        if !may_fetch {
            return Err(if known || self.uri.is_none() {
                unknown()
            } else {
                KeyError::Unavailable("the transmitter's keys are not loaded yet".into())
            });
        }
        match self.refresh().await {
            Ok(_) => lock(&self.state).0.as_deref().and_then(pick).ok_or_else(unknown),
            Err(e) => Err(KeyError::Unavailable(format!("the transmitter's keys cannot be fetched: {e}"))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
