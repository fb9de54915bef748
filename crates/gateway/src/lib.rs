//! The fapi-gateway application: the enforcement library ([`fapi_enforcement`]) assembled
//! into a pingora server. [`server`] builds and runs the services, [`connections`] accepts
//! and bounds downstream connections, [`proxy`] is the `ProxyHttp` that decides and
//! forwards, [`forward_auth`] answers the decision alone for nginx and Caddy (mode
//! `forward_auth`), [`access`] logs and counts each request, [`admin`] serves health,
//! readiness, metrics and revocations, [`signal_receiver`] takes pushed Security Event
//! Tokens, [`cluster`] applies every revocation and carries it to every replica of a
//! fleet, [`reload`] applies configuration changes without
//! a restart.

pub mod access;
pub mod admin;
pub mod cluster;
pub mod connections;
pub mod error;
pub mod forward_auth;
pub mod jwks;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod signal_receiver;
pub mod telemetry;
pub mod upstreams;
