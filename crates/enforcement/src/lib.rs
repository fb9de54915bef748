//! The FAPI enforcement plugin: everything that decides whether a request to a bank's
//! open-finance API may pass, and nothing that serves one.
//!
//! The modules follow one request: [`client_identity`] (the client certificate, from the
//! handshake or a trusted proxy's header) → [`credentials`] (the access token) →
//! [`introspection`] through its [`cache`] (bounded, coalescing, indexed by consent) →
//! [`policy`] (routes, profiles and the consent checks) → a grant, or a [`refusal`] with
//! its RFC 6750 challenge and Open Banking error body. [`config`] reads and validates the
//! configuration, [`secrets`] its secrets, [`strict_json`] every JSON document a decision
//! depends on. [`signals`] reads the revocation Security Event Tokens authorization servers
//! push, into [`revocation`]s.

#![warn(missing_docs)]

pub mod cache;
pub mod client_identity;
pub mod config;
pub mod credentials;
pub mod diagnostics;
pub mod dpop;
pub mod enforcer;
pub mod error;
pub mod explain;
pub mod grant_jwt;
pub mod introspection;
pub mod metrics;
pub mod policy;
pub mod refusal;
pub mod resilience;
pub mod revocation;
pub mod secrets;
pub mod signals;
pub mod strict_json;
pub mod traffic;

/// Installs ring, with the FAPI TLS profile, as the process-wide rustls provider. Call
/// before any TLS is set up: pingora, reqwest and the fixtures all use the process default.
pub fn install_crypto_provider() {
    client_identity::install_crypto_provider(config::TlsProfile::Fapi).expect("one TLS profile per process");
}
