//! The fapi-gateway development kit: what the demo, the tests and the benchmark run
//! around the gateway, never in front of a real bank. [`fixtures`] holds the mock
//! authorization server, the mock banks and the consent storage page; [`pki`] writes a
//! development PKI; [`demo`] starts it all on loopback; [`tpp`] walks a TPP's journey;
//! [`bench`] and [`bench_nginx`] measure the gateway against its baselines.

pub mod bare_proxy;
pub mod bench;
pub mod bench_fleet;
pub mod bench_jwt;
pub mod bench_nginx;
pub mod bench_oha;
pub mod bench_proc;
pub mod bench_traffic;
pub mod demo;
pub mod demo_fleet;
pub mod fixtures;
pub mod pki;
pub mod tpp;
