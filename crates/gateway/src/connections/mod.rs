//! Downstream connections: how many, from whom, and for how long (`[connections]`).
//!
//! The proxy listener runs its own accept loop, [`ProxyListener`], instead of pingora's
//! (which gives every handshake 60 s and has no caps). Each connection, in order:
//!
//! 1. at accept, before any TLS: the cap on open connections and the per-client cap
//!    ([`ConnectionTracker::admit`]); a refused connection is closed at once. The
//!    [`Permit`] admitting it lives in the connection's task, so the counts go down however
//!    the connection ends (handshake failure or deadline, error, panic, close);
//! 2. the TLS handshake, within `handshake_timeout`;
//! 3. then [`Watched`] holds its reads to deadlines that pingora's per-read timeouts do not
//!    give: the request head complete within `request_head_timeout` (counted from the end
//!    of the handshake for the first request, from their first byte for the next ones),
//!    the next HTTP/1.1 request begun within `idle_timeout` of the previous response, and
//!    for HTTP/2 the client preface within `request_head_timeout` (after which pingora
//!    closes the connection once no stream has been open for `idle_timeout`).
//!
//! A request head is complete when pingora hands it to the proxy's modules ([`HeadRead`]).
//! The module reaches the connection's state through a task-local: pingora serves an
//! HTTP/1 connection's requests on the task that accepted it.

mod accept;
mod buffered;
mod caps;
mod deadlines;
pub mod log_noise;

pub use accept::ProxyListener;
pub use caps::{client_key, ConnectionTracker, Permit, Refused};
pub use deadlines::{server_options, DeadlineApp, HeadRead, Watched};

use std::io;
use std::net::SocketAddr;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::error::GatewayError;

// ---- the open-files limit ---------------------------------------------------------------

/// Raises the soft limit on open files to the hard limit where allowed; returns the limit
/// then in force.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot read the open-files limit");
        return 1024;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            tracing::warn!(
                soft = limit.rlim_cur,
                hard = limit.rlim_max,
                error = %io::Error::last_os_error(),
                "cannot raise the open-files limit to the hard limit"
            );
        }
    }
    limit.rlim_cur
}

/// The soft limit on open files, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct it is given.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit.rlim_cur)
}

/// Descriptors kept for everything but downstream connections: connections to the banks
/// and the authorization servers beyond one per request, the admin listener, files.
const RESERVED_FILES: u64 = 256;

/// `connections.max_connections` when not configured: half of what the open-files limit
/// leaves after [`RESERVED_FILES`] (a downstream connection with a request in flight holds
/// a second descriptor, to the bank), at least 64 and at most 10 000.
pub fn derived_max_connections(open_files: u64) -> usize {
    (open_files.saturating_sub(RESERVED_FILES) / 2).clamp(64, 10_000) as usize
}

// ---- listening sockets ------------------------------------------------------------------

/// Binds a listening socket now (with `SO_REUSEADDR` and pingora's backlog), so that a
/// taken address fails the start instead of a retry loop in the background.
pub fn bind_listener(address: SocketAddr) -> Result<std::net::TcpListener, GatewayError> {
    let listener = std::net::TcpListener::bind(address).map_err(|e| listen_error(address, &e))?;
    // SAFETY: listen(2) on a socket this function owns; on a listening socket it only
    // changes the backlog (the kernel caps it at somaxconn).
    unsafe { libc::listen(listener.as_raw_fd(), 65535) };
    Ok(listener)
}

/// `cannot listen on 127.0.0.1:8443: address in use`.
pub fn listen_error(address: SocketAddr, e: &io::Error) -> GatewayError {
    let reason = match e.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_string(),
        io::ErrorKind::AddrNotAvailable => "address not available on this host".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    GatewayError::Listen { address, reason }
}

/// Whether the proxy listener is accepting connections (`/readyz`).
pub type Accepting = Arc<AtomicBool>;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use fapi_enforcement::config::{Cidr, ConnectionLimits};
    use fapi_enforcement::metrics::Metrics;

    use super::*;

    fn limits(max: usize, per_ip: usize) -> ConnectionLimits {
        ConnectionLimits { max_connections: Some(max), max_connections_per_ip: per_ip, ..ConnectionLimits::default() }
    }

    #[test]
    fn permits_count_in_all_and_per_client_and_give_back_on_drop() {
        let metrics = Arc::new(Metrics::new());
        let t = ConnectionTracker::new(&limits(3, 2), vec![Cidr::parse("10.0.0.1").unwrap()], metrics.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = t.admit(Some(a)).unwrap();
        let a2 = t.admit(Some(a)).unwrap();
        assert_eq!(t.admit(Some(a)).err(), Some(Refused::PerClient));
        let b1 = t.admit(Some(b)).unwrap();
        assert_eq!(t.admit(Some(b)).err(), Some(Refused::MaxConnections));
        assert_eq!((t.open(), metrics.connections_open.get()), (3, 3));
        drop(a1);
        // The refused one gave its per-client place back: b may have a second now.
        let b2 = t.admit(Some(b)).unwrap();
        drop((a2, b1, b2));
        assert_eq!((t.open(), metrics.connections_open.get()), (0, 0));
        assert!(t.per_client().is_empty());
        // A trusted proxy is not held to the per-client cap.
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<Permit> = (0..3).map(|_| t.admit(Some(proxy)).unwrap()).collect();
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_slash_64() {
        let key = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
    }

    #[test]
    fn the_default_cap_follows_the_open_files_limit() {
        assert_eq!(derived_max_connections(1024), 384);
        assert_eq!(derived_max_connections(1_048_576), 10_000);
        assert_eq!(derived_max_connections(100), 64);
    }

    #[test]
    fn a_taken_address_is_named() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        assert_eq!(bind_listener(addr).unwrap_err().to_string(), format!("cannot listen on {addr}: address in use"));
    }
}
