//! The gateway as a pingora [`ProxyHttp`]: `request_filter` decides, everything after it
//! forwards. A decision is a value (`Result<Grant, Refusal>`); the one place that turns a
//! refusal into bytes is [`Gateway::refuse`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Method;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_core::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use fapi_enforcement::cache::{CacheOutcome, ServerLinks};
use fapi_enforcement::client_identity::{certificate_from_header, ClientCertificate, ClientVerifier};
use fapi_enforcement::config::{ClientCertificateSource, IdentityHeaderNames, Limits};
use fapi_enforcement::credentials::{credentials, Scheme};
use fapi_enforcement::dpop::{DpopVerifier, ProofError};
use fapi_enforcement::introspection::unix_now;
use fapi_enforcement::metrics::Metrics;
use fapi_enforcement::policy::{Grant, PolicySet, Presented};
use fapi_enforcement::refusal::Refusal;

pub const INTERACTION_ID: &str = "x-fapi-interaction-id";

/// What forwarding needs besides the policy.
#[derive(Debug, Clone)]
pub struct ForwardingSettings {
    pub identity_headers: IdentityHeaderNames,
    pub forward_authorization: bool,
    pub client_certificates: ClientCertificateSource,
    pub limits: Limits,
    /// Hosts the gateway serves (`host` or `host:port`, lower case); empty: any.
    pub server_names: Vec<String>,
    pub upstream_connect_timeout: Duration,
    pub upstream_read_timeout: Duration,
}

/// What can change on reload, swapped whole so a request sees one generation throughout.
pub struct Live {
    pub policies: PolicySet,
    pub settings: ForwardingSettings,
}

/// The gateway's request logic. The cache outlives reloads.
pub struct Gateway {
    live: Arc<ArcSwap<Live>>,
    servers: Arc<ServerLinks>,
    /// Verifies certificates that arrive in headers from a trusted proxy.
    client_verifier: Arc<ClientVerifier>,
    dpop: DpopVerifier,
    metrics: Arc<Metrics>,
}

/// Per-request state across pingora's phases.
pub struct RequestContext {
    started: Instant,
    upstream_started: Option<Instant>,
    interaction_id: String,
    live: Option<Arc<Live>>,
    api: Option<String>,
    route: Option<String>,
    grant: Option<Grant>,
    refusal: Option<&'static str>,
    token_tag: Option<String>,
    cache: Option<CacheOutcome>,
    body_bytes: u64,
    body_limit: u64,
}

impl Gateway {
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        servers: Arc<ServerLinks>,
        client_verifier: Arc<ClientVerifier>,
        dpop: DpopVerifier,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway { live, servers, client_verifier, dpop, metrics }
    }

    /// Verifies the request's DPoP proof for `token`; returns the proof key's thumbprint.
    fn verify_dpop(
        &self,
        session: &Session,
        token: &str,
        verified_host: Option<&str>,
    ) -> std::result::Result<String, Refusal> {
        let req = session.req_header();
        let invalid = |d: &str| Refusal::InvalidDpopProof { description: d.to_string() };
        let mut proofs = req.headers.get_all("dpop").iter();
        let proof = match (proofs.next(), proofs.next()) {
            (Some(p), None) => p.to_str().map_err(|_| invalid("not ASCII"))?,
            (None, _) => return Err(invalid("no DPoP header")),
            (Some(_), Some(_)) => return Err(invalid("more than one DPoP header")),
        };
        // Never the client's Host unless it matched `server_names` (config requires one of the two).
        let htu = self
            .dpop
            .expected_htu(verified_host, req.uri.path())
            .ok_or_else(|| invalid("the gateway's external URL is not configured"))?;
        self.dpop.verify(proof, req.method.as_str(), &htu, Some(token), unix_now()).map_err(|e| match e {
            ProofError::Invalid(d) => Refusal::InvalidDpopProof { description: d },
            ProofError::UseNonce(nonce) => Refusal::UseDpopNonce { nonce },
        })
    }

    /// The thumbprint of the client certificate this request comes with: from the TLS
    /// handshake, or from a trusted proxy's header (RFC 9440), verified here.
    fn client_certificate(
        &self,
        session: &Session,
        source: &ClientCertificateSource,
    ) -> Result<Option<String>, Refusal> {
        match source {
            ClientCertificateSource::Handshake => {
                Ok(ClientCertificate::of_session(session).map(|c| c.thumbprint.clone()))
            }
            ClientCertificateSource::ProxyHeader { trusted, format } => {
                let peer = session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip());
                if !peer.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip))) {
                    // Anyone else's certificate headers are not believed (and are removed upstream).
                    return Ok(None);
                }
                let chain = certificate_from_header(&session.req_header().headers, *format).map_err(|_| {
                    Refusal::InvalidRequest {
                        description: "the client certificate header is malformed",
                        field: "Client-Cert",
                    }
                })?;
                let Some(chain) = chain else { return Ok(None) };
                match self.client_verifier.verify_presented(&chain) {
                    Ok(c) => Ok(Some(c.thumbprint)),
                    Err(e) => {
                        tracing::warn!(error = %e, "certificate from the proxy does not verify; treated as none");
                        Ok(None)
                    }
                }
            }
        }
    }

    /// Every check, in the order of the request: limits, route, credentials, introspection, policy.
    async fn authorize(&self, session: &mut Session, ctx: &mut RequestContext) -> std::result::Result<Grant, Refusal> {
        let live = self.live.load_full();
        ctx.live = Some(live.clone());
        let req = session.req_header();
        check_limits(req, &live.settings.limits)?;
        let verified_host = served_host(req, &live.settings.server_names)?;
        let matched = live.policies.route(&req.method, req.uri.path(), req.uri.query())?;
        ctx.api = Some(matched.api.name.clone());
        ctx.route = Some(matched.route.path.clone());
        // The route's body limit (else the global one), on the declared length and on the stream.
        ctx.body_limit = matched.route.body_limit.unwrap_or(live.settings.limits.max_body_bytes);
        let declared =
            req.headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > ctx.body_limit) {
            return Err(Refusal::BodyTooLarge);
        }
        // A body on a route that takes none (a GET with a body) is refused before anything
        // is forwarded: the bank might read it, or fail on it mid-request.
        let takes_body =
            matched.route.request_body.unwrap_or(matches!(req.method, Method::POST | Method::PUT | Method::PATCH));
        if !takes_body && !session.as_downstream_mut().is_body_empty() {
            return Err(Refusal::InvalidRequest { description: "this route takes no request body", field: "body" });
        }
        let req = session.req_header();
        if matched.route.public {
            return Ok(matched.public_grant());
        }
        let (scheme, token) = credentials(&req.headers, req.uri.query())?;
        let token = token.to_string();
        let token = token.as_str();
        // Proofs are checked before anything costs a call.
        let dpop_thumbprint = match scheme {
            Scheme::Dpop => Some(self.verify_dpop(session, token, verified_host.as_deref())?),
            Scheme::Bearer => None,
        };
        let Some(server) = self.servers.get(&matched.api.authorization_server) else {
            // Validated at load and reload; fail closed all the same.
            tracing::error!(server = %matched.api.authorization_server, "no such authorization server running");
            return Err(Refusal::AuthorizationServerUnavailable { retry_after_seconds: 30 });
        };
        let key = server.cache.key(token);
        ctx.token_tag = Some(key.short());
        let (cached, outcome) = server.cache.lookup(key, token, matched.route.cache_ttl).await.map_err(|e| {
            tracing::warn!(server = %server.name, token = %key.short(), error = %e, "introspection failed; refusing (fail closed)");
            Refusal::AuthorizationServerUnavailable { retry_after_seconds: server.retry_after_seconds }
        })?;
        ctx.cache = Some(outcome);
        let body = match matched.route.body_consent {
            Some(_) => Some(read_json_body(session, matched.route.max_body_bytes).await?),
            None => None,
        };
        let thumbprint = self.client_certificate(session, &live.settings.client_certificates)?;
        let presented = Presented {
            certificate_thumbprint: thumbprint.as_deref(),
            body: body.as_ref(),
            dpop_thumbprint: dpop_thumbprint.as_deref(),
        };
        matched.evaluate(&cached.info, presented, unix_now())
    }

    /// Writes the response for a refusal. The only place refusals become bytes.
    async fn refuse(&self, session: &mut Session, ctx: &mut RequestContext, refusal: &Refusal) -> Result<()> {
        ctx.refusal = Some(refusal.reason());
        let r = refusal.to_response(&ctx.interaction_id);
        let mut header = ResponseHeader::build(r.status, Some(6))?;
        header.insert_header("content-type", "application/json")?;
        header.insert_header("content-length", r.body.len().to_string())?;
        header.insert_header("cache-control", "no-store")?;
        header.insert_header(INTERACTION_ID, ctx.interaction_id.as_str())?;
        if let Some(challenge) = r.www_authenticate {
            header.insert_header("www-authenticate", challenge)?;
        }
        if let Some(seconds) = r.retry_after {
            header.insert_header("retry-after", seconds.to_string())?;
        }
        if let Some(nonce) = r.dpop_nonce {
            header.insert_header("dpop-nonce", nonce)?;
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
}

/// Header count and size within the configured limits (the body's, which a route may set,
/// is checked once the route is known).
fn check_limits(req: &RequestHeader, limits: &Limits) -> std::result::Result<(), Refusal> {
    let headers = &req.headers;
    let bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if headers.len() > limits.max_header_count || bytes > limits.max_header_bytes {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// The request's host when the listener names the hosts it serves: every `Host` (and the
/// HTTP/2 `:authority`) must be one of them. `None` when any host is served.
fn served_host(req: &RequestHeader, names: &[String]) -> std::result::Result<Option<String>, Refusal> {
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

/// Hop-by-hop headers (RFC 9110 §7.6.1): for this connection only, never forwarded.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"];

/// Reads the whole request body (at most `limit` bytes) as JSON, keeping it for pingora to
/// replay to the upstream.
async fn read_json_body(session: &mut Session, limit: usize) -> std::result::Result<serde_json::Value, Refusal> {
    let downstream = session.as_downstream_mut();
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
    // Duplicate members are refused: the bank's parser might read the other one.
    fapi_enforcement::strict_json::parse(&body).map_err(|_| Refusal::InvalidRequest {
        description: "the request body is not JSON, or names a member twice",
        field: "body",
    })
}

/// The caller's interaction id if it is a UUID; a fresh one otherwise. A malformed one
/// is refused (FAPI requires a UUID), still answered under a fresh id.
fn interaction_id(req: &RequestHeader) -> (String, Option<Refusal>) {
    let mut values = req.headers.get_all(INTERACTION_ID).iter();
    match (values.next(), values.next()) {
        (None, _) => (uuid::Uuid::new_v4().to_string(), None),
        (Some(v), None) => match v.to_str().ok().and_then(|s| uuid::Uuid::try_parse(s).ok().map(|_| s)) {
            Some(s) => (s.to_string(), None),
            None => (
                uuid::Uuid::new_v4().to_string(),
                Some(Refusal::InvalidRequest {
                    description: "x-fapi-interaction-id must be a UUID",
                    field: INTERACTION_ID,
                }),
            ),
        },
        (Some(_), Some(_)) => (
            uuid::Uuid::new_v4().to_string(),
            Some(Refusal::InvalidRequest {
                description: "more than one x-fapi-interaction-id header",
                field: INTERACTION_ID,
            }),
        ),
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestContext;

    fn new_ctx(&self) -> RequestContext {
        RequestContext {
            started: Instant::now(),
            upstream_started: None,
            interaction_id: String::new(),
            live: None,
            api: None,
            route: None,
            grant: None,
            refusal: None,
            token_tag: None,
            cache: None,
            body_bytes: 0,
            body_limit: u64::MAX,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestContext) -> Result<bool> {
        let (id, bad_id) = interaction_id(session.req_header());
        ctx.interaction_id = id;
        let deciding = Instant::now();
        let decision = match bad_id {
            Some(refusal) => Err(refusal),
            None => self.authorize(session, ctx).await,
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
        let grant = ctx
            .grant
            .as_ref()
            .ok_or_else(|| pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "no grant"))?;
        let settings = &ctx.live.as_ref().expect("set with the grant").settings;
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
        let grant = ctx
            .grant
            .as_ref()
            .ok_or_else(|| pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "no grant"))?;
        let uri = grant
            .upstream_path
            .parse()
            .map_err(|_| pingora_core::Error::explain(pingora_core::ErrorType::InternalError, "bad upstream path"))?;
        upstream.set_uri(uri);
        let settings = &ctx.live.as_ref().expect("set with the grant").settings;
        let names = &settings.identity_headers;
        // Whatever the client sent under our identity header names is not to be believed.
        for name in names.all() {
            while upstream.remove_header(name).is_some() {}
        }
        // Headers named in Connection, and the standard hop-by-hop ones, stop here.
        let named: Vec<String> = upstream
            .headers
            .get_all("connection")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').map(|n| n.trim().to_ascii_lowercase()))
            .filter(|n| !n.is_empty())
            .collect();
        for name in named.iter().map(String::as_str).chain(HOP_BY_HOP) {
            while upstream.remove_header(name).is_some() {}
        }
        // Header names with `_` are dropped (as nginx does by default): CGI, WSGI and PHP
        // stacks read `X_Consent_Id` as `X-Consent-Id`, an identity header.
        let underscored: Vec<http::HeaderName> =
            upstream.headers.keys().filter(|n| n.as_str().contains('_')).cloned().collect();
        for name in underscored {
            while upstream.remove_header(&name).is_some() {}
        }
        // The proxy's certificate headers were for the gateway.
        for name in ["client-cert", "client-cert-chain", "x-ssl-client-cert"] {
            upstream.remove_header(name);
        }
        if !settings.forward_authorization {
            upstream.remove_header("authorization");
        }
        let mut set = |name: &str, value: &str| upstream.insert_header(name.to_string(), value.to_string()).map(|_| ());
        if let Some(v) = &grant.consent_id {
            set(&names.consent_id, v)?;
        }
        if let Some(v) = &grant.client_id {
            set(&names.client_id, v)?;
        }
        if let Some(v) = &grant.subject {
            set(&names.subject, v)?;
        }
        if !grant.scopes.is_empty() {
            set(&names.scopes, &grant.scopes)?;
        }
        if !grant.accounts.is_empty() {
            set(&names.accounts, &grant.accounts.join(","))?;
        }
        set(INTERACTION_ID, &ctx.interaction_id)?;
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
            if ctx.body_bytes > ctx.body_limit {
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
        if let (Some(started), Some(api)) = (ctx.upstream_started.take(), ctx.api.as_deref()) {
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
        let status = session.response_written().map(|r| r.status.as_u16()).unwrap_or(0);
        let grant = ctx.grant.as_ref();
        let decision = ctx.refusal.unwrap_or(if grant.is_some() { "allowed" } else { "none" });
        let api = ctx.api.as_deref().unwrap_or("");
        let route = ctx.route.as_deref().unwrap_or("");
        let elapsed = ctx.started.elapsed();
        // Unmatched paths count under the method only: their text is the client's, unbounded.
        let method = if ctx.route.is_some() { req.method.as_str() } else { "" };
        self.metrics.requests.with_label_values(&[api, route, method, &status.to_string(), decision]).inc();
        self.metrics.request_duration.with_label_values(&[api]).observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "fapi_gateway::access",
            interaction_id = %ctx.interaction_id,
            method = %req.method,
            path = %req.uri.path(),
            status,
            decision,
            api,
            route,
            client_id = grant.and_then(|g| g.client_id.as_deref()).unwrap_or(""),
            consent_id = grant.and_then(|g| g.consent_id.as_deref()).unwrap_or(""),
            token = ctx.token_tag.as_deref().unwrap_or(""),
            cache = ctx.cache.map(CacheOutcome::as_str).unwrap_or(""),
            elapsed_us = elapsed.as_micros() as u64,
        );
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
}
