//! `[forwarding]`: what the bank receives (`[upstreams]`, where, is in upstream.rs).

use std::time::Duration;

use serde::Deserialize;

use super::file::ForwardingSection;
use crate::diagnostics::Diagnostics;

/// Names of the headers through which the gateway tells the bank who is calling.
/// Whatever the client sent under these names is removed before they are set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaderNames {
    /// The consent id.
    pub consent_id: String,
    /// The TPP's `client_id`.
    pub client_id: String,
    /// The customer (`sub`).
    pub subject: String,
    /// The token's scopes.
    pub scopes: String,
    /// The consent's granted accounts.
    pub accounts: String,
}

impl Default for IdentityHeaderNames {
    fn default() -> Self {
        IdentityHeaderNames {
            consent_id: "x-consent-id".into(),
            client_id: "x-client-id".into(),
            subject: "x-subject".into(),
            scopes: "x-granted-scopes".into(),
            accounts: "x-consent-accounts".into(),
        }
    }
}

impl IdentityHeaderNames {
    /// Every name, in a fixed order.
    pub fn all(&self) -> [&str; 5] {
        [&self.consent_id, &self.client_id, &self.subject, &self.scopes, &self.accounts]
    }
}

/// The validated `[forwarding]`.
pub(super) struct Forwarding {
    pub headers: IdentityHeaderNames,
    pub forward_authorization: bool,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

pub(super) fn validate(f: &ForwardingSection, d: &mut Diagnostics) -> Forwarding {
    for (name, ms) in [
        ("upstream_connect_timeout_ms", &f.upstream_connect_timeout_ms),
        ("upstream_read_timeout_ms", &f.upstream_read_timeout_ms),
    ] {
        if *ms.get_ref() == 0 {
            d.error(Some(ms.span()), format!("forwarding.{name} must be above 0"));
        }
    }
    for name in f.headers.get_ref().all() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            d.error(Some(f.headers.span()), format!("forwarding header name `{name}` is not a valid header name"));
        }
    }
    Forwarding {
        headers: f.headers.get_ref().clone(),
        forward_authorization: f.forward_authorization,
        connect_timeout: Duration::from_millis((*f.upstream_connect_timeout_ms.get_ref()).max(1)),
        read_timeout: Duration::from_millis((*f.upstream_read_timeout_ms.get_ref()).max(1)),
    }
}
