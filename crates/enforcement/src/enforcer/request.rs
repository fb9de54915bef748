//! Checks on the request head before any route: header limits, the served host, the
//! interaction id.

use pingora_http::RequestHeader;

use crate::config::Limits;
use crate::refusal::Refusal;

/// The FAPI interaction id header: echoed, passed upstream, on every response.
pub const INTERACTION_ID: &str = "x-fapi-interaction-id";

/// Header count and size within the configured limits (the body's, which a route may set,
/// is checked once the route is known).
pub(super) fn check_limits(req: &RequestHeader, limits: &Limits) -> Result<(), Refusal> {
    let headers = &req.headers;
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if headers.len() > limits.max_header_count || bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// The request's host when the listener names the hosts it serves: every `Host` (and the
/// HTTP/2 `:authority`) must be one of them. `None` when any host is served.
pub(super) fn served_host(req: &RequestHeader, names: &[String]) -> Result<Option<String>, Refusal> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut hosts = req.headers.get_all("host").iter().map(|h| h.to_str().ok());
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => {
            return Err(Refusal::InvalidRequest { description: "more than one Host header", field: "Host" });
        }
        (Some(None), _) => return Err(Refusal::MisdirectedRequest),
        (Some(Some(h)), None) => Some(h),
        (None, _) => None,
    };
    let authority = req.uri.authority().map(|a| a.as_str());
    let host = match (authority, header) {
        (Some(a), Some(h)) if !a.eq_ignore_ascii_case(h) => return Err(Refusal::MisdirectedRequest),
        (Some(a), _) => a,
        (None, Some(h)) => h,
        (None, None) => return Err(Refusal::MisdirectedRequest),
    };
    let host = host.to_ascii_lowercase();
    let without_port = match host.rsplit_once(':') {
        Some((h, port)) if !h.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host.as_str(),
    };
    if names.iter().any(|n| *n == host || *n == without_port) {
        Ok(Some(host))
    } else {
        Err(Refusal::MisdirectedRequest)
    }
}

/// Whether the customer is present: one `x-fapi-customer-ip-address` holding an IP
/// address (a malformed one is passed on, never refused, but does not lift PSD2's
/// unattended-access limit).
pub(super) fn customer_present(req: &RequestHeader) -> bool {
    let mut values = req.headers.get_all(crate::traffic::CUSTOMER_IP_HEADER).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().is_some_and(|s| s.trim().parse::<std::net::IpAddr>().is_ok()),
        _ => false,
    }
}

/// A fresh interaction id: a UUID version 4 from the thread's CSPRNG (`rand`'s
/// `ThreadRng`: ChaCha12, seeded from the operating system's `getrandom` and reseeded from
/// it every 64 KiB), so unpredictable as `Uuid::new_v4` is, without its `getrandom` system
/// call on every request. Written into a stack buffer: one allocation, the `String`.
pub fn fresh_interaction_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text).to_string()
}

/// The caller's interaction id if it is a UUID; a fresh one otherwise. A malformed one
/// is refused (FAPI requires a UUID), still answered under a fresh id.
pub fn interaction_id(req: &RequestHeader) -> (String, Option<Refusal>) {
    let mut values = req.headers.get_all(INTERACTION_ID).iter();
    match (values.next(), values.next()) {
        (None, _) => (fresh_interaction_id(), None),
        (Some(v), None) => match v.to_str().ok().and_then(|s| uuid::Uuid::try_parse(s).ok().map(|_| s)) {
            Some(s) => (s.to_string(), None),
            None => (
                fresh_interaction_id(),
                Some(Refusal::InvalidRequest {
                    description: "x-fapi-interaction-id must be a UUID",
                    field: INTERACTION_ID,
                }),
            ),
        },
        (Some(_), Some(_)) => (
            fresh_interaction_id(),
            Some(Refusal::InvalidRequest {
                description: "more than one x-fapi-interaction-id header",
                field: INTERACTION_ID,
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ids: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for id in ids {
            r.append_header(INTERACTION_ID, *id).unwrap();
        }
        r
    }

    #[test]
    fn interaction_ids() {
        let uuid = "93bac548-d2de-4546-b106-880a5018460d";
        assert_eq!(interaction_id(&req(&[uuid])), (uuid.to_string(), None));
        let (fresh, refusal) = interaction_id(&req(&[]));
        assert!(uuid::Uuid::try_parse(&fresh).is_ok() && refusal.is_none());
        let (fresh, refusal) = interaction_id(&req(&["not-a-uuid"]));
        assert!(uuid::Uuid::try_parse(&fresh).is_ok());
        assert_eq!(refusal.unwrap().status(), 400);
        assert_eq!(interaction_id(&req(&[uuid, uuid])).1.unwrap().status(), 400);
    }

    #[test]
    fn fresh_interaction_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..10_000).map(|_| fresh_interaction_id()).collect();
        assert_eq!(ids.len(), 10_000);
        for id in ids.iter().take(100) {
            let parsed = uuid::Uuid::try_parse(id).unwrap();
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id.len(), 36);
            assert_eq!(*id, id.to_ascii_lowercase());
        }
        // Other threads draw from generators of their own, seeded apart.
        let other: Vec<String> =
            std::thread::spawn(|| (0..1000).map(|_| fresh_interaction_id()).collect()).join().unwrap();
        assert!(other.iter().all(|id| !ids.contains(id)));
    }
}
