//! fapi-gateway: an mTLS reverse proxy that lets through only requests that a FAPI
//! authorization server and the customer's consent allow.
//!
//! The modules follow one request through the gateway:
//! [`client_identity`] (TLS and the client certificate) → [`credentials`] (the bearer
//! token) → [`introspection`] and its [`cache`] → [`policy`] (routes and consent
//! checks) → [`proxy`] (forwarding, and [`refusal`] responses for everything refused).
//! [`config`] loads `gateway.toml`, [`server`] assembles and runs the services, [`admin`]
//! serves health, and [`fixtures`] holds the mock authorization server and banks that the
//! demo, the tests and the benchmark use.

pub mod admin;
pub mod bench;
pub mod bench_nginx;
pub mod cache;
pub mod client_identity;
pub mod config;
pub mod connections;
pub mod credentials;
pub mod demo;
pub mod dpop;
pub mod explain;
pub mod fixtures;
pub mod introspection;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod refusal;
pub mod reload;
pub mod resilience;
pub mod secrets;
pub mod server;
pub mod strict_json;
pub mod tpp;

/// Installs ring, with the FAPI TLS profile, as the process-wide rustls provider. Call
/// before any TLS is set up: pingora, reqwest and the fixtures all use the process default.
pub fn install_crypto_provider() {
    client_identity::install_crypto_provider(config::TlsProfile::Fapi).expect("one TLS profile per process");
}
