//! The gateway as a pingora [`ProxyHttp`]: `request_filter` asks the enforcement library
//! ([`Enforcer`]) for a decision, everything after it forwards. Refusals become bytes in
//! the library's [`write_refusal`], grants in its [`apply_grant`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access::{self, AccessRecord};
use crate::telemetry::{RequestSpans, SharedTelemetry};
use crate::upstreams::{Pool, Upstreams};
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
    upstreams: Arc<Upstreams>,
    telemetry: SharedTelemetry,
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
    upstream: UpstreamAttempts,
    spans: Option<RequestSpans>,
}

/// Where a request went upstream: its pool, the deadline of its total timeout, the target
/// of the current attempt and the targets whose connect failed.
#[derive(Default)]
pub struct UpstreamAttempts {
    pool: Option<Arc<Pool>>,
    deadline: Option<Instant>,
    target: Option<SocketAddr>,
    failed: Vec<SocketAddr>,
}

impl Gateway {
    pub fn new(enforcer: Arc<Enforcer>, metrics: Arc<Metrics>, upstreams: Arc<Upstreams>) -> Gateway {
        Gateway { enforcer, metrics, upstreams, telemetry: None }
    }

    /// Traces requests with `telemetry` (`[tracing]`).
    pub fn with_telemetry(mut self, telemetry: SharedTelemetry) -> Gateway {
        self.telemetry = telemetry;
        self
    }

    /// Writes the response for a refusal and notes its reason for the access log.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestContext, refusal: &Refusal) -> Result<()> {
        ctx.refusal = Some(refusal.reason());
        write_refusal(session, refusal, &ctx.interaction_id).await
    }
}

impl Gateway {
    /// Answers `GET /.well-known/jwks.json` when `grant_jwt.jwks_on_listener` asks for it
    /// (the listener's mutual TLS still applies). Returns whether it answered.
    async fn serve_jwks(&self, session: &mut Session, ctx: &RequestContext) -> Result<bool> {
        let req = session.req_header();
        if req.uri.path() != fapi_enforcement::grant_jwt::JWKS_PATH || req.method != http::Method::GET {
            return Ok(false);
        }
        let live = self.enforcer.live();
        let Some(body) = live.settings.grant_jwt.as_ref().filter(|g| g.jwks_on_listener).and(crate::jwks::jwks(&live))
        else {
            return Ok(false);
        };
        let mut header = ResponseHeader::build(200, Some(4))?;
        for (name, value) in crate::jwks::headers() {
            header.insert_header(name, value)?;
        }
        header.insert_header("content-length", body.len().to_string())?;
        header.insert_header(INTERACTION_ID, &ctx.interaction_id)?;
        session.write_response_header(Box::new(header), false).await?;
        session.write_response_body(Some(body.into()), true).await?;
        Ok(true)
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
            upstream: UpstreamAttempts::default(),
            spans: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        let (id, bad_id) = interaction_id(session.req_header());
        ctx.interaction_id = id;
        if let Some(telemetry) = &self.telemetry {
            ctx.spans = Some(telemetry.begin(session.req_header()));
        }
        if self.serve_jwks(session, ctx).await? {
            return Ok(true);
        }
        let deciding = Instant::now();
        let decision = match bad_id {
            Some(refusal) => Err(refusal),
            None => decide(&self.enforcer, session, &mut ctx.trace).await,
        };
        self.metrics.decision_duration.observe(deciding.elapsed().as_secs_f64());
        if let (Some(telemetry), Some(spans)) = (&self.telemetry, ctx.spans.as_mut()) {
            let reason = decision.as_ref().err().map_or("allowed", Refusal::reason);
            spans.decided(telemetry, &ctx.trace, reason, decision.as_ref().ok());
        }
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

    /// A target of the grant's upstream (another one than any whose connect failed), its
    /// timeouts bounded by what is left of the upstream's total.
    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut RequestContext) -> Result<Box<HttpPeer>> {
        use pingora_core::{Error, ErrorType};
        let grant = ctx.grant.as_ref().ok_or_else(no_grant)?;
        let pool = match &ctx.upstream.pool {
            Some(p) => p.clone(),
            None => {
                let pool = self.upstreams.get(&grant.upstream_name).cloned().ok_or_else(|| {
                    Error::explain(
                        ErrorType::InternalError,
                        format!("upstream `{}` is not running (restart to add it)", grant.upstream_name),
                    )
                })?;
                ctx.upstream.deadline = Some(Instant::now() + pool.settings.total_timeout);
                ctx.upstream.pool = Some(pool.clone());
                pool
            }
        };
        let remaining = ctx.upstream.deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
        if remaining.is_zero() {
            return Error::e_explain(ErrorType::ConnectTimedout, "the upstream's total timeout passed");
        }
        let target = pool
            .select(grant.consent_id.as_deref(), &ctx.upstream.failed)
            .ok_or_else(|| Error::explain(ErrorType::ConnectNoRoute, "no upstream target left to try"))?;
        ctx.upstream.target = Some(target);
        ctx.upstream_started.get_or_insert_with(Instant::now);
        Ok(Box::new(pool.peer(target, remaining)))
    }

    /// A failed connect ejects the target; an idempotent request is tried once more on
    /// another target (nothing of it was sent: the connection never stood).
    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestContext,
        mut e: Box<pingora_core::Error>,
    ) -> Box<pingora_core::Error> {
        let (Some(pool), Some(target)) = (ctx.upstream.pool.clone(), ctx.upstream.target.take()) else {
            e.set_retry(false);
            return e;
        };
        pool.eject(target);
        ctx.upstream.failed.push(target);
        let consent = ctx.grant.as_ref().and_then(|g| g.consent_id.as_deref());
        let retry = pool.settings.retry_failed_connect
            && ctx.upstream.failed.len() == 1
            && session.req_header().method.is_idempotent()
            && pool.select(consent, &ctx.upstream.failed).is_some();
        e.set_retry(retry);
        let retried = if retry { "true" } else { "false" };
        self.metrics.upstream_connect_failures.with_label_values(&[pool.settings.name.as_str(), retried]).inc();
        e
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        let grant = ctx.grant.as_ref().ok_or_else(no_grant)?;
        let settings = &ctx.trace.live.as_ref().ok_or_else(no_grant)?.settings;
        apply_grant(upstream, grant, settings, &ctx.interaction_id)?;
        if let (Some(telemetry), Some(spans)) = (&self.telemetry, ctx.spans.as_mut()) {
            spans.upstream(telemetry, upstream, grant);
        }
        Ok(())
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
        response: &mut ResponseHeader,
        ctx: &mut RequestContext,
    ) -> Result<()> {
        if let Some(spans) = ctx.spans.as_mut() {
            spans.upstream_answered(response.status.as_u16());
        }
        if let (Some(started), Some(api)) = (ctx.upstream_started.take(), ctx.trace.api.as_deref()) {
            self.metrics.upstream_duration.with_label_values(&[api]).observe(started.elapsed().as_secs_f64());
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
        if let Some(fields) = &ctx.trace.rate_limit {
            response.insert_header("ratelimit-policy", fields.policy.as_str())?;
            response.insert_header("ratelimit", fields.current.as_str())?;
        }
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
            ctx.interaction_id = uuid::Uuid::new_v4().to_string();
        }
        let refusal = match (e.esource(), e.etype()) {
            (_, ErrorType::HTTPStatus(413)) => Some(Refusal::BodyTooLarge),
            (
                ErrorSource::Upstream,
                ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
            ) => Some(Refusal::UpstreamTimeout),
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
        let status = record.status;
        access::record(&self.metrics, record);
        if let Some(spans) = ctx.spans.take() {
            spans.finish(status);
        }
    }
}
