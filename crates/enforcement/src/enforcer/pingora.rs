//! The enforcer inside a pingora [`ProxyHttp`](pingora_proxy::ProxyHttp): decide from a
//! [`Session`] in `request_filter`, write a refusal, forward a grant with
//! [`apply_grant`](super::forward::apply_grant) in `upstream_request_filter`.

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Connection, Enforcer, Request, Trace, INTERACTION_ID};
use crate::client_identity::ClientCertificate;
use crate::policy::Grant;
use crate::refusal::Refusal;

/// A pingora session's request; its body is read whole (and kept for pingora to replay
/// to the upstream) only when a route checks it.
pub struct SessionRequest<'s>(pub &'s mut Session);

#[async_trait]
impl Request for SessionRequest<'_> {
    fn head(&self) -> &pingora_http::RequestHeader {
        self.0.req_header()
    }

    fn body_is_empty(&mut self) -> bool {
        self.0.as_downstream_mut().is_body_empty()
    }

    async fn read_body(&mut self, limit: usize) -> Result<Vec<u8>, Refusal> {
        let downstream = self.0.as_downstream_mut();
        downstream.enable_retry_buffering();
        let unreadable = Refusal::InvalidRequest { description: "the request body could not be read", field: "body" };
        let mut body = Vec::new();
        while let Some(chunk) = downstream.read_request_body().await.map_err(|_| unreadable.clone())? {
            if body.len() + chunk.len() > limit {
                return Err(Refusal::BodyTooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        if downstream.retry_buffer_truncated() {
            return Err(Refusal::BodyTooLarge);
        }
        Ok(body)
    }
}

/// What the session's connection presents: its handshake's client certificate, its peer.
pub fn connection_of(session: &Session) -> Connection {
    Connection {
        certificate_thumbprint: ClientCertificate::of_session(session).map(|c| c.thumbprint.clone()),
        peer: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
    }
}

/// Decides the session's request (see [`Enforcer::decide`]).
pub async fn decide(enforcer: &Enforcer, session: &mut Session, trace: &mut Trace) -> Result<Grant, Refusal> {
    let connection = connection_of(session);
    enforcer.decide(&mut SessionRequest(session), &connection, trace).await
}

/// Writes the response for a refusal, with the interaction id: status, RFC 6750
/// challenge, Open Banking error body, `cache-control: no-store`.
pub async fn write_refusal(session: &mut Session, refusal: &Refusal, interaction_id: &str) -> pingora_core::Result<()> {
    let r = refusal.to_response(interaction_id);
    let mut header = ResponseHeader::build(r.status, Some(8))?;
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", r.body.len().to_string())?;
    header.insert_header("cache-control", "no-store")?;
    header.insert_header(INTERACTION_ID, interaction_id)?;
    if let Some(challenge) = r.www_authenticate {
        header.insert_header("www-authenticate", challenge)?;
    }
    if let Some(seconds) = r.retry_after {
        header.insert_header("retry-after", seconds.to_string())?;
    }
    if let Some(fields) = r.rate_limit {
        header.insert_header("ratelimit-policy", fields.policy)?;
        header.insert_header("ratelimit", fields.current)?;
    }
    if let Some(nonce) = r.dpop_nonce {
        header.insert_header("dpop-nonce", nonce)?;
    }
    if let Some(allow) = r.allow {
        header.insert_header("allow", allow)?;
    }
    // The connection stays open unless a request body may be left unread.
    let req = session.req_header();
    let bodiless = req.headers.get("content-length").is_none_or(|v| v.as_bytes() == b"0")
        && req.headers.get("transfer-encoding").is_none();
    if !bodiless {
        session.set_keepalive(None);
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(r.body), true).await
}
