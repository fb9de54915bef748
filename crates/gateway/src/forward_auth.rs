//! Forward-auth mode (`[listener] mode = "forward_auth"`): the listener answers the
//! decision alone, for a proxy that terminates TLS and forwards itself — nginx
//! `auth_request`, Caddy `forward_auth`.
//!
//! The proxy calls with the client's headers, the original method and URI in
//! `X-Forwarded-Method` and `X-Forwarded-Uri` (what Caddy sends; nginx is configured to),
//! the original Host in `X-Forwarded-Host` (else `Host`), the client certificate as
//! `listener.client_cert_header` says (RFC 9440 `Client-Cert`, or nginx's
//! `X-SSL-Client-Cert`), and the original `Content-Length` in
//! `X-Forwarded-Content-Length`. The call's own method, path and body are ignored.
//!
//! The answer is 200 with the grant's identity headers (`[forwarding.headers]`, each one,
//! empty when the grant has no value for it) and `x-fapi-interaction-id`, for the proxy to
//! set upstream; or the refusal as the proxy
//! listener would send it (status, `WWW-Authenticate`, Open Banking body), for the proxy
//! to pass to the client. Calls from outside `listener.trusted_proxies` are refused (403):
//! everything in them would be the caller's word. The proxy never shows the body, so a
//! route that checks it (`body_consent`, payments) is refused: those need the gateway in
//! the data path.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use http::Method;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{ProxyHttp, Session};

use crate::access::{self, AccessRecord};
use fapi_enforcement::config::{ClientCertificateSource, IdentityHeaderNames};
use fapi_enforcement::enforcer::forward::identity_headers;
use fapi_enforcement::enforcer::pingora::{connection_of, write_refusal};
use fapi_enforcement::enforcer::{interaction_id, Enforcer, Request, Trace, INTERACTION_ID};
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::Grant;
use fapi_enforcement::refusal::Refusal;

/// The original request's method.
pub const FORWARDED_METHOD: &str = "x-forwarded-method";
/// The original request's URI (path and query).
pub const FORWARDED_URI: &str = "x-forwarded-uri";
/// The original request's Host.
pub const FORWARDED_HOST: &str = "x-forwarded-host";
/// The original request's `Content-Length`, when it had one.
pub const FORWARDED_CONTENT_LENGTH: &str = "x-forwarded-content-length";

/// The call's headers that describe the call itself, not the original request.
const NOT_COPIED: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    FORWARDED_METHOD,
    FORWARDED_URI,
    FORWARDED_HOST,
    FORWARDED_CONTENT_LENGTH,
];

/// Why a route that reads the body is refused here.
const BODY_UNSEEN: &str =
    "this route checks the request body, which forward-auth does not see: it needs the gateway in the data path";

/// The forward-auth listener's request logic: the enforcer, and the metrics it reports to.
pub struct ForwardAuth {
    enforcer: Arc<Enforcer>,
    metrics: Arc<Metrics>,
}

/// Per-call state, for the access log.
pub struct CallContext {
    started: Instant,
    interaction_id: String,
    /// The original method and path, once known.
    method: String,
    path: String,
    trace: Trace,
    grant: Option<Grant>,
    decision: &'static str,
}

impl ForwardAuth {
    pub fn new(enforcer: Arc<Enforcer>, metrics: Arc<Metrics>) -> ForwardAuth {
        ForwardAuth { enforcer, metrics }
    }

    /// Whether `peer` is one of the proxies trusted to speak for their clients.
    fn trusted(&self, peer: Option<IpAddr>) -> bool {
        match &self.enforcer.live().settings.client_certificates {
            ClientCertificateSource::ProxyHeader { trusted, .. } => {
                peer.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip)))
            }
            ClientCertificateSource::Handshake => false,
        }
    }
}

/// The original request as the proxy describes it: its head, and whether it declared a body.
struct Forwarded {
    head: RequestHeader,
    has_body: bool,
}

#[async_trait]
impl Request for Forwarded {
    fn head(&self) -> &RequestHeader {
        &self.head
    }

    fn body_is_empty(&mut self) -> bool {
        !self.has_body
    }

    async fn read_body(&mut self, _limit: usize) -> std::result::Result<Vec<u8>, Refusal> {
        Err(Refusal::InvalidRequest { description: BODY_UNSEEN, field: "body" })
    }
}

/// The one value of header `name`, if any; two are refused.
fn single<'r>(call: &'r RequestHeader, name: &'static str) -> std::result::Result<Option<&'r [u8]>, Refusal> {
    let mut values = call.headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => Ok(Some(v.as_bytes())),
        (Some(_), Some(_)) => {
            Err(Refusal::InvalidRequest { description: "a forwarded header came twice", field: name })
        }
    }
}

/// Builds the original request's head from the proxy's call: method and URI from
/// `X-Forwarded-Method` and `X-Forwarded-Uri`, Host from `X-Forwarded-Host` (else the
/// call's `Host` or `:authority`), `Content-Length` from `X-Forwarded-Content-Length`,
/// every other header as the proxy passed it.
fn original_request(call: &RequestHeader) -> std::result::Result<Forwarded, Refusal> {
    let missing = |field| Refusal::InvalidRequest {
        description: "the proxy must send X-Forwarded-Method and X-Forwarded-Uri (see the forward-auth configuration)",
        field,
    };
    let method = single(call, FORWARDED_METHOD)?.ok_or_else(|| missing(FORWARDED_METHOD))?;
    let method = Method::from_bytes(method).map_err(|_| Refusal::InvalidRequest {
        description: "X-Forwarded-Method is not a method",
        field: FORWARDED_METHOD,
    })?;
    let uri = single(call, FORWARDED_URI)?.ok_or_else(|| missing(FORWARDED_URI))?;
    let bad_uri = || Refusal::InvalidRequest {
        description: "X-Forwarded-Uri is not a path with an optional query",
        field: FORWARDED_URI,
    };
    if uri.first() != Some(&b'/') {
        return Err(bad_uri());
    }
    let mut head = RequestHeader::build(method, uri, Some(call.headers.len())).map_err(|_| bad_uri())?;
    let length = match single(call, FORWARDED_CONTENT_LENGTH)? {
        // nginx sends no header for an empty variable; Caddy sends an empty one.
        None | Some(b"") => None,
        Some(v) => Some(std::str::from_utf8(v).ok().and_then(|v| v.trim().parse::<u64>().ok()).ok_or(
            Refusal::InvalidRequest {
                description: "X-Forwarded-Content-Length is not a length",
                field: FORWARDED_CONTENT_LENGTH,
            },
        )?),
    };
    let host: Vec<&[u8]> = match single(call, FORWARDED_HOST)? {
        Some(h) => vec![h],
        // An HTTP/2 call names its host in `:authority`.
        None if call.headers.get("host").is_none() => {
            call.uri.authority().map(|a| a.as_str().as_bytes()).into_iter().collect()
        }
        None => call.headers.get_all("host").iter().map(|h| h.as_bytes()).collect(),
    };
    let internal = |_| Refusal::InvalidRequest { description: "a forwarded header is malformed", field: "headers" };
    for h in host {
        head.append_header("host", h).map_err(internal)?;
    }
    if let Some(n) = length {
        head.append_header("content-length", n.to_string()).map_err(internal)?;
    }
    for (name, value) in call.headers.iter() {
        if !NOT_COPIED.contains(&name.as_str()) {
            head.append_header(name.clone(), value.clone()).map_err(internal)?;
        }
    }
    Ok(Forwarded { head, has_body: length.is_some_and(|n| n > 0) })
}

/// Writes the answer to a granted request: 200, no body, every identity header. One the
/// grant has no value for is sent empty, so that the proxy replaces the client's with
/// nothing (Caddy 2.6's `copy_headers` would set an absent one to its placeholder's text).
async fn write_grant(
    session: &mut Session,
    grant: &Grant,
    names: &IdentityHeaderNames,
    interaction_id: &str,
) -> Result<()> {
    let granted = identity_headers(grant, names);
    let mut header = ResponseHeader::build(200, Some(8))?;
    for name in names.all() {
        let value = granted.iter().find(|(n, _)| *n == name).map_or("", |(_, v)| v.as_str());
        header.insert_header(name.to_string(), value)?;
    }
    // The gateway-signed grant JWT, for the proxy to pass on like the identity headers.
    if let Some(signed) = &grant.signed_identity {
        header.insert_header(signed.header.to_string(), signed.jwt.as_ref())?;
    }
    header.insert_header(INTERACTION_ID, interaction_id)?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header("content-length", "0")?;
    session.write_response_header(Box::new(header), true).await
}

/// The answer to a call from outside `listener.trusted_proxies`: 403, Open Banking body.
async fn write_untrusted(session: &mut Session, interaction_id: &str) -> Result<()> {
    let message = "forward-auth calls are answered for the listener's trusted proxies only";
    let body = serde_json::json!({
        "Code": "403 Forbidden",
        "Id": interaction_id,
        "Message": message,
        "Errors": [{ "ErrorCode": "UK.OBIE.Header.Invalid", "Message": message, "Path": "peer" }],
    })
    .to_string();
    let mut header = ResponseHeader::build(403, Some(5))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header(INTERACTION_ID, interaction_id)?;
    session.set_keepalive(None);
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body.into()), true).await
}

fn no_upstream() -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "forward-auth has no upstream")
}

#[async_trait]
impl ProxyHttp for ForwardAuth {
    type CTX = CallContext;

    fn new_ctx(&self) -> CallContext {
        CallContext {
            started: Instant::now(),
            interaction_id: String::new(),
            method: String::new(),
            path: String::new(),
            trace: Trace::default(),
            grant: None,
            decision: "none",
        }
    }

    /// Answers every call here; nothing is proxied.
    async fn request_filter(&self, session: &mut Session, ctx: &mut CallContext) -> Result<bool> {
        let connection = connection_of(session);
        let (id, bad_id) = interaction_id(session.req_header());
        ctx.interaction_id = id;
        if !self.trusted(connection.peer) {
            tracing::warn!(peer = ?connection.peer, "forward-auth call from outside listener.trusted_proxies; refused");
            ctx.decision = "untrusted_proxy";
            write_untrusted(session, &ctx.interaction_id).await?;
            return Ok(true);
        }
        let deciding = Instant::now();
        let decision = match (bad_id, original_request(session.req_header())) {
            (Some(refusal), _) | (None, Err(refusal)) => Err(refusal),
            (None, Ok(mut forwarded)) => {
                ctx.method = forwarded.head.method.to_string();
                ctx.path = forwarded.head.uri.path().to_string();
                self.enforcer.decide(&mut forwarded, &connection, &mut ctx.trace).await
            }
        };
        self.metrics.decision_duration.observe(deciding.elapsed().as_secs_f64());
        match decision {
            Ok(grant) => {
                ctx.decision = "allowed";
                // The header names of the configuration generation that decided.
                let live = ctx.trace.live.clone().unwrap_or_else(|| self.enforcer.live());
                write_grant(session, &grant, &live.settings.identity_headers, &ctx.interaction_id).await?;
                ctx.grant = Some(grant);
            }
            Err(refusal) => {
                ctx.decision = refusal.reason();
                write_refusal(session, &refusal, &ctx.interaction_id).await?;
            }
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut CallContext) -> Result<Box<HttpPeer>> {
        Err(no_upstream())
    }

    fn request_summary(&self, session: &Session, ctx: &CallContext) -> String {
        format!("forward-auth {} interaction_id={}", session.req_header().method, ctx.interaction_id)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora_core::Error>, ctx: &mut CallContext) {
        let record = AccessRecord {
            interaction_id: &ctx.interaction_id,
            method: &ctx.method,
            path: &ctx.path,
            status: session.response_written().map(|r| r.status.as_u16()).unwrap_or(0),
            decision: ctx.decision,
            trace: &ctx.trace,
            grant: ctx.grant.as_ref(),
            elapsed: ctx.started.elapsed(),
        };
        access::record(&self.metrics, record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/auth", None).unwrap();
        for (n, v) in headers {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn the_original_request_comes_from_the_forwarded_headers() {
        let c = call(&[
            ("host", "127.0.0.1:9000"),
            ("x-forwarded-method", "POST"),
            ("x-forwarded-uri", "/gobank/accounts?x=1"),
            ("x-forwarded-host", "api.bank.example"),
            ("x-forwarded-content-length", "12"),
            ("content-length", "0"),
            ("authorization", "Bearer t"),
        ]);
        let f = original_request(&c).unwrap();
        assert_eq!(f.head.method, Method::POST);
        assert_eq!(f.head.uri.path(), "/gobank/accounts");
        assert_eq!(f.head.uri.query(), Some("x=1"));
        assert_eq!(f.head.headers.get("host").unwrap(), "api.bank.example");
        assert_eq!(f.head.headers.get("content-length").unwrap(), "12");
        assert_eq!(f.head.headers.get("authorization").unwrap(), "Bearer t");
        assert!(f.has_body && f.head.headers.get(FORWARDED_URI).is_none());
        assert_eq!(f.head.headers.get_all("host").iter().count(), 1);
    }

    #[test]
    fn without_forwarded_host_or_length_the_call_says() {
        let c = call(&[("host", "api.bank.example"), ("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a")]);
        let f = original_request(&c).unwrap();
        assert_eq!(f.head.headers.get("host").unwrap(), "api.bank.example");
        assert!(!f.has_body && f.head.headers.get("content-length").is_none());
        let empty =
            call(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a"), ("x-forwarded-content-length", "")]);
        assert!(!original_request(&empty).unwrap().has_body);
    }

    #[test]
    fn an_http2_call_names_the_host_in_its_authority() {
        let mut c = RequestHeader::build("GET", b"/auth", None).unwrap();
        c.set_uri("https://api.bank.example/auth".parse().unwrap());
        c.append_header("x-forwarded-method", "GET").unwrap();
        c.append_header("x-forwarded-uri", "/a").unwrap();
        let f = original_request(&c).unwrap();
        assert_eq!(f.head.headers.get("host").unwrap(), "api.bank.example");
    }

    #[test]
    fn a_call_that_does_not_describe_a_request_is_refused() {
        let status = |h: &[(&str, &str)]| original_request(&call(h)).err().map(|r| r.status());
        assert_eq!(status(&[("x-forwarded-uri", "/a")]), Some(400));
        assert_eq!(status(&[("x-forwarded-method", "GET")]), Some(400));
        assert_eq!(status(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "http://evil/a")]), Some(400));
        assert_eq!(status(&[("x-forwarded-method", "G T"), ("x-forwarded-uri", "/a")]), Some(400));
        let two = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a"), ("x-forwarded-uri", "/b")];
        assert_eq!(status(&two), Some(400));
        let length = [("x-forwarded-method", "GET"), ("x-forwarded-uri", "/a"), ("x-forwarded-content-length", "-1")];
        assert_eq!(status(&length), Some(400));
    }
}
