//! The gateway as a pingora [`ProxyHttp`]: `request_filter` asks the enforcement library
//! ([`Enforcer`]) for a decision, everything after it forwards. Refusals become bytes in
//! the library's [`write_refusal`], grants in its [`apply_grant`].

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access::{self, AccessRecord};
use fapi_enforcement::enforcer::forward::apply_grant;
use fapi_enforcement::enforcer::pingora::{decide, write_refusal};
use fapi_enforcement::enforcer::{interaction_id, Enforcer, Trace, INTERACTION_ID};
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::Grant;
use fapi_enforcement::refusal::Refusal;

/// The gateway's request logic: the enforcer, and the metrics it reports to.
pub struct Gateway {
    enforcer: Arc<Enforcer>,
    metrics: Arc<Metrics>,
}

/// Per-request state across pingora's phases.
pub struct RequestContext {
    started: Instant,
    upstream_started: Option<Instant>,
    interaction_id: String,
    trace: Trace,
    grant: Option<Grant>,
    refusal: Option<&'static str>,
    body_bytes: u64,
}

impl Gateway {
    pub fn new(enforcer: Arc<Enforcer>, metrics: Arc<Metrics>) -> Gateway {
        Gateway { enforcer, metrics }
    }

    /// Writes the response for a refusal and notes its reason for the access log.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestContext, refusal: &Refusal) -> Result<()> {
        ctx.refusal = Some(refusal.reason());
        write_refusal(session, refusal, &ctx.interaction_id).await
    }
}

fn no_grant() -> Box<pingora_core::Error> {
    pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "no grant")
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            started: Instant::now(),
            upstream_started: None,
            interaction_id: String::new(),
            trace: Trace::default(),
            grant: None,
            refusal: None,
            body_bytes: 0,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        let (id, bad_id) = interaction_id(session.req_header());
        ctx.interaction_id = id;
        let deciding = Instant::now();
        let decision = match bad_id {
            Some(refusal) => Err(refusal),
            None => decide(&self.enforcer, session, &mut ctx.trace).await,
        };
        self.metrics.decision_duration.observe(deciding.elapsed().as_secs_f64());
        match decision {
            Ok(grant) => {
                ctx.grant = Some(grant);
                Ok(false)
            }
            Err(refusal) => {
                self.refuse(session, ctx, &refusal).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestContext) -> Result<Box<HttpPeer>> {
        let grant = ctx.grant.as_ref().ok_or_else(no_grant)?;
        let settings = &ctx.trace.live.as_ref().ok_or_else(no_grant)?.settings;
        let mut peer = HttpPeer::new(grant.upstream, false, String::new());
        peer.options.connection_timeout = Some(settings.upstream_connect_timeout);
        peer.options.read_timeout = Some(settings.upstream_read_timeout);
        ctx.upstream_started = Some(Instant::now());
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let grant = ctx.grant.as_ref().ok_or_else(no_grant)?;
        let settings = &ctx.trace.live.as_ref().ok_or_else(no_grant)?.settings;
        apply_grant(upstream, grant, settings, &ctx.interaction_id)
    }

    /// Bodies the gateway only forwards are counted as they stream: past the limit the
    /// request is cut off (the upstream sees an incomplete body, which it must reject).
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let Some(chunk) = body.as_ref() {
            ctx.body_bytes += chunk.len() as u64;
            if ctx.body_bytes > ctx.trace.body_limit.unwrap_or(u64::MAX) {
                return Err(pingora_core::Error::explain(
                    pingora_core::ErrorType::HTTPStatus(413),
                    "request body over the limit",
                ));
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let (Some(started), Some(api)) = (ctx.upstream_started.take(), ctx.trace.api.as_deref()) {
            crate::labels::upstream_duration(&self.metrics, api).observe(started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        response.insert_header(INTERACTION_ID, ctx.interaction_id.as_str())?;
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &pingora_core::Error,
        ctx: &mut RequestContext,
    ) -> FailToProxy {
        use pingora_core::{ErrorSource, ErrorType};
        if ctx.interaction_id.is_empty() {
            ctx.interaction_id = fapi_enforcement::enforcer::fresh_interaction_id();
        }
        let refusal = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(413)) => Some(Refusal::BodyTooLarge),
            (ErrorSource::Downstream, ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed) => {
                None
            }
            (ErrorSource::Downstream, _) => {
                Some(Refusal::InvalidRequest { description: "the request could not be read", field: "request" })
            }
            _ => Some(Refusal::UpstreamUnavailable),
        };
        let code = match refusal {
            Some(r) => {
                tracing::warn!(interaction_id = %ctx.interaction_id, error = %e, "request failed after authorization");
                if self.refuse(session, ctx, &r).await.is_err() {
                    0
                } else {
                    r.status()
                }
            }
            None => 0,
        };
        FailToProxy { error_code: code, can_reuse_downstream: false }
    }

    /// What pingora's own error logs say of a request: the path without its query (which
    /// could carry a token the request is being refused for).
    fn request_summary(&self, session: &Session, ctx: &RequestContext) -> String {
        let req = session.req_header();
        format!("{} {} interaction_id={}", req.method, req.uri.path(), ctx.interaction_id)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora_core::Error>, ctx: &mut RequestContext) {
        let req = session.req_header();
        let grant = ctx.grant.as_ref();
        let record = AccessRecord {
            interaction_id: &ctx.interaction_id,
            method: req.method.as_str(),
            path: req.uri.path(),
            status: session.response_written().map(|r| r.status.as_u16()).unwrap_or(0),
            decision: ctx.refusal.unwrap_or(if grant.is_some() { "allowed" } else { "none" }),
            trace: &ctx.trace,
            grant,
            elapsed: ctx.started.elapsed(),
        };
        access::record(&self.metrics, record);
    }
}
