//! The decision API: given a request head, what its connection presents and the live
//! configuration, decide → a [`Grant`] (with the headers to set upstream) or a
//! [`Refusal`] (with the response to send).
//!
//! [`Enforcer::decide`] runs every check in the order of the request: limits, host,
//! route, body presence, credentials, DPoP proof, introspection (through the cache),
//! client certificate, policy. It serves no connection: the host (a pingora proxy through
//! [`pingora`], the gateway's forward-auth listener, a test) hands it the
//! request as a [`Request`] and turns the outcome into bytes with [`forward`] or
//! [`Refusal::to_response`].
//!
//! ```no_run
//! # async fn example(enforcer: &fapi_enforcement::enforcer::Enforcer, head: &pingora_http::RequestHeader) {
//! use fapi_enforcement::enforcer::{Connection, HeadOnly, Trace};
//!
//! let connection = Connection { certificate_thumbprint: None, peer: None };
//! let mut trace = Trace::default();
//! match enforcer.decide(&mut HeadOnly(head), &connection, &mut trace).await {
//!     Ok(grant) => println!("forward to {} as {}", grant.upstream, grant.upstream_path),
//!     Err(refusal) => println!("answer {}", refusal.summary()),
//! }
//! # }
//! ```

mod build;
pub mod forward;
pub mod pingora;
mod request;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::Method;
use pingora_http::RequestHeader;
use serde_json::Value;

use crate::cache::{CacheOutcome, ServerLinks};
use crate::client_identity::{certificate_from_header, ClientVerifier};
use crate::config::{ClientCertificateSource, IdentityHeaderNames, Limits};
use crate::credentials::{credentials, Scheme};
use crate::dpop::{DpopVerifier, ProofError};
use crate::introspection::unix_now;
use crate::policy::{Grant, PolicySet, Presented};
use crate::refusal::Refusal;
use crate::traffic::{FleetLimiter, Limiter, Subject};
pub use build::{server_links, server_links_wrapped, WrapIntrospector};
pub use request::{fresh_interaction_id, interaction_id, INTERACTION_ID};

/// What forwarding needs besides the policy.
#[derive(Debug, Clone)]
pub struct ForwardingSettings {
    /// Names of the identity headers set on forwarded requests.
    pub identity_headers: IdentityHeaderNames,
    /// Whether the client's `Authorization` header goes to the bank too.
    pub forward_authorization: bool,
    /// Where the client certificate comes from.
    pub client_certificates: ClientCertificateSource,
    /// Limits on what a client may send.
    pub limits: Limits,
    /// Hosts the gateway serves (`host` or `host:port`, lower case); empty: any.
    pub server_names: Vec<String>,
    /// Connecting to the bank's backend may take this long.
    pub upstream_connect_timeout: Duration,
    /// Waiting for the bank's backend between reads may take this long.
    pub upstream_read_timeout: Duration,
    /// The issuer and keys of grant JWTs (`[grant_jwt]`), if configured.
    pub grant_jwt: Option<Arc<crate::grant_jwt::GrantJwtSettings>>,
    /// Header names grant JWTs travel in (every API's, and the default): whatever the
    /// client sent under them is removed.
    pub grant_jwt_headers: Vec<Arc<str>>,
}

/// What can change on reload, swapped whole so a request sees one generation throughout.
pub struct Live {
    /// Every API's routes.
    pub policies: PolicySet,
    /// Forwarding and request limits.
    pub settings: ForwardingSettings,
}

/// What the connection a request came on presents.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    /// Base64url SHA-256 of the client certificate of this connection's TLS handshake.
    pub certificate_thumbprint: Option<String>,
    /// The peer's address (a trusted proxy's, behind one).
    pub peer: Option<IpAddr>,
}

/// A request as the enforcer sees it: its head, and its body, which is read only when a
/// route checks it (`body_consent`).
#[async_trait]
pub trait Request: Send {
    /// The request line and headers.
    fn head(&self) -> &RequestHeader;
    /// Whether the request has no body at all.
    fn body_is_empty(&mut self) -> bool;
    /// The whole body, at most `limit` bytes ([`Refusal::BodyTooLarge`] past that), kept
    /// by the host for forwarding.
    async fn read_body(&mut self, limit: usize) -> Result<Vec<u8>, Refusal>;
}

/// A request head without a body, or whose body the host cannot show (forward-auth): a
/// route that checks its body refuses it.
pub struct HeadOnly<'h>(pub &'h RequestHeader);

#[async_trait]
impl Request for HeadOnly<'_> {
    fn head(&self) -> &RequestHeader {
        self.0
    }
    fn body_is_empty(&mut self) -> bool {
        true
    }
    async fn read_body(&mut self, _limit: usize) -> Result<Vec<u8>, Refusal> {
        Err(Refusal::InvalidRequest { description: "the request body could not be read", field: "body" })
    }
}

/// What a decision found on its way, for logs and metrics (filled as far as it got).
#[derive(Default)]
pub struct Trace {
    /// The configuration generation the decision used.
    pub live: Option<Arc<Live>>,
    /// The API and route matched.
    pub api: Option<String>,
    /// The route's path template.
    pub route: Option<String>,
    /// A short, non-reversible tag of the token, for correlating log lines.
    pub token_tag: Option<String>,
    /// How the introspection cache answered.
    pub cache: Option<CacheOutcome>,
    /// On a refusal after an active token was introspected: its client, for the access log
    /// (an allowed request's is in its grant).
    pub client_id: Option<String>,
    /// On such a refusal: the token's consent id, when it has one.
    pub consent_id: Option<String>,
    /// The body limit of the matched route (else the gateway's).
    pub body_limit: Option<u64>,
    /// The `RateLimit` fields of the limits that counted an allowed request.
    pub rate_limit: Option<crate::traffic::RateLimitFields>,
    /// The introspection call this request made or waited for (not on a cache hit).
    pub introspection: Option<IntrospectionCall>,
}

/// An introspection call as a decision saw it, for a tracing span.
#[derive(Debug, Clone)]
pub struct IntrospectionCall {
    /// The authorization server's name.
    pub server: String,
    /// When the lookup started.
    pub started: std::time::SystemTime,
    /// How long the lookup took (the call, or the wait for another request's call).
    pub duration: Duration,
    /// Whether it failed (the request was refused: authorization server unavailable).
    pub failed: bool,
}

/// Decides requests against the live configuration, with the introspection caches of
/// every authorization server. The caches outlive reloads.
pub struct Enforcer {
    live: Arc<ArcSwap<Live>>,
    servers: Arc<ServerLinks>,
    /// Verifies certificates that arrive in headers from a trusted proxy.
    client_verifier: Arc<ClientVerifier>,
    dpop: DpopVerifier,
    /// The counters of the policies' rate limits and quotas.
    limiter: Arc<Limiter>,
    /// With `[cluster]`: the same limits counted fleet-wide (instead of `limiter`).
    fleet_limiter: Option<Arc<FleetLimiter>>,
}

impl Enforcer {
    /// An enforcer over `live` (which the host may swap on reload), introspecting through
    /// `servers`.
    pub fn new(
        live: Arc<ArcSwap<Live>>,
        servers: Arc<ServerLinks>,
        client_verifier: Arc<ClientVerifier>,
        dpop: DpopVerifier,
    ) -> Enforcer {
        Enforcer { live, servers, client_verifier, dpop, limiter: Arc::new(Limiter::default()), fleet_limiter: None }
    }

    /// Counts limits in `limiter` (the host's, e.g. one sized by it or kept across
    /// enforcers) instead of a limiter of its own.
    pub fn with_limiter(mut self, limiter: Arc<Limiter>) -> Enforcer {
        self.limiter = limiter;
        self
    }

    /// Counts limits fleet-wide through `fleet` instead of locally.
    pub fn with_fleet_limiter(mut self, fleet: Arc<FleetLimiter>) -> Enforcer {
        self.fleet_limiter = Some(fleet);
        self
    }

    /// The counters of the policies' rate limits and quotas.
    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.limiter
    }

    /// The configuration generation in force.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Every check, in the order of the request: limits, host, route, body presence,
    /// credentials, DPoP proof, introspection, client certificate, policy.
    pub async fn decide(
        &self,
        request: &mut dyn Request,
        connection: &Connection,
        trace: &mut Trace,
    ) -> Result<Grant, Refusal> {
        let live = self.live.load_full();
        trace.live = Some(live.clone());
        let body_is_empty = request.body_is_empty();
        let req = request.head();
        request::check_limits(req, &live.settings.limits)?;
        let verified_host = request::served_host(req, &live.settings.server_names)?;
        let matched = live.policies.route(&req.method, req.uri.path(), req.uri.query())?;
        trace.api = Some(matched.api.name.clone());
        trace.route = Some(matched.route.path.clone());
        let customer_present = request::customer_present(req);
        // The route's body limit (else the global one), on the declared length and on the stream.
        let body_limit = matched.route.body_limit.unwrap_or(live.settings.limits.max_body_bytes);
        trace.body_limit = Some(body_limit);
        let declared =
            req.headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > body_limit) {
            return Err(Refusal::BodyTooLarge);
        }
        // A body on a route that takes none (a GET with a body) is refused before anything
        // is forwarded: the bank might read it, or fail on it mid-request.
        let takes_body =
            matched.route.request_body.unwrap_or(matches!(req.method, Method::POST | Method::PUT | Method::PATCH));
        if !takes_body && !body_is_empty {
            return Err(Refusal::InvalidRequest { description: "this route takes no request body", field: "body" });
        }
        if matched.route.public {
            return Ok(matched.public_grant());
        }
        let (scheme, token) = credentials(&req.headers, req.uri.query())?;
        // Proofs are checked before anything costs a call.
        let dpop_thumbprint = match scheme {
            Scheme::Dpop => Some(self.verify_dpop(req, token, verified_host.as_deref())?),
            Scheme::Bearer => None,
        };
        let Some(server) = self.servers.get(&matched.api.authorization_server) else {
            // Validated at load and reload; fail closed all the same.
            tracing::error!(server = %matched.api.authorization_server, "no such authorization server running");
            return Err(Refusal::AuthorizationServerUnavailable { retry_after_seconds: 30 });
        };
        let key = server.cache.key(token);
        trace.token_tag = Some(key.short());
        let (started, clock) = (std::time::SystemTime::now(), std::time::Instant::now());
        let looked_up = server.cache.lookup(key, token, matched.route.cache_ttl).await;
        let outcome = looked_up.as_ref().map(|(_, o)| *o).ok();
        if outcome != Some(CacheOutcome::Hit) {
            trace.introspection = Some(IntrospectionCall {
                server: server.name.clone(),
                started,
                duration: clock.elapsed(),
                failed: outcome.is_none(),
            });
        }
        let (cached, outcome) = looked_up.map_err(|e| {
            tracing::warn!(server = %server.name, token = %key.short(), error = %e, "introspection failed; refusing (fail closed)");
            Refusal::AuthorizationServerUnavailable { retry_after_seconds: server.retry_after_seconds }
        })?;
        trace.cache = Some(outcome);
        // A refusal from here on names the token's client and consent in the access log.
        let identify = |trace: &mut Trace, refusal: Refusal| {
            if cached.info.active {
                trace.client_id = cached.info.client_id.as_deref().map(str::to_string);
                trace.consent_id = matched.api.claims.consent_id.string(&cached.info.claims).map(str::to_string);
            }
            refusal
        };
        let thumbprint = self
            .client_certificate(req, connection, &live.settings.client_certificates)
            .map_err(|r| identify(trace, r))?;
        let body = match matched.route.body_consent {
            Some(_) => Some(read_json(request, matched.route.max_body_bytes).await.map_err(|r| identify(trace, r))?),
            None => None,
        };
        let presented = Presented {
            certificate_thumbprint: thumbprint.as_deref(),
            body: body.as_ref(),
            dpop_thumbprint: dpop_thumbprint.as_deref(),
        };
        let now = unix_now();
        let decision = matched.evaluate(&cached.info, presented, now);
        if outcome == CacheOutcome::Miss {
            if let Err(Refusal::Consent(crate::refusal::ConsentRefusal::Status { .. })) = &decision {
                // A fresh answer says the consent no longer grants access: its other
                // tokens go here, and (through the cache's listener) at every replica.
                if let Some(consent) = matched.api.claims.consent_id.string(&cached.info.claims) {
                    server.cache.consent_found_not_granting(consent, key).await;
                }
            }
        }
        let mut grant = decision.map_err(|r| identify(trace, r))?;
        let api = matched.api;
        if !api.limits.is_empty() || api.unattended_access.is_some() {
            let account = matched.route.account_param.as_ref().and_then(|param| {
                let raw = matched.params.iter().find(|(n, _)| n == param).map(|(_, v)| v.as_str())?;
                raw.split(';').next()
            });
            let subject = Subject {
                api: &api.name,
                route: &matched.route.path,
                client_id: grant.client_id.as_deref(),
                consent_id: grant.consent_id.as_deref(),
                certificate: thumbprint.as_deref(),
                account,
                customer_present,
            };
            let (rules, unattended, kinds) =
                (&api.limits, api.unattended_access.as_ref(), &matched.route.consent_types);
            let admitted = match &self.fleet_limiter {
                Some(fleet) => fleet.admit(rules, unattended, kinds, &subject).await,
                None => self.limiter.admit(rules, unattended, kinds, &subject),
            };
            let fields = admitted.map_err(|exceeded| identify(trace, Refusal::TooManyRequests(Box::new(exceeded))))?;
            if !fields.is_empty() {
                trace.rate_limit = Some(fields);
            }
        }
        if let Some(forward) = &api.forward_jwt {
            // Never forwarded without the JWT the API asks for (fail closed).
            let Some(signer) = &live.settings.grant_jwt else {
                tracing::error!(api = %matched.api.name, "forward_jwt without [grant_jwt] keys; refusing");
                return Err(Refusal::UpstreamUnavailable);
            };
            let issued = signer.issue(&cached.grant_jwts, forward, matched.api, &cached.info, &grant, now);
            grant.signed_identity = Some(issued.map_err(|e| {
                tracing::error!(api = %matched.api.name, error = %e, "refusing");
                Refusal::UpstreamUnavailable
            })?);
        }
        Ok(grant)
    }

    /// Verifies the request's DPoP proof for `token`; returns the proof key's thumbprint.
    fn verify_dpop(&self, req: &RequestHeader, token: &str, verified_host: Option<&str>) -> Result<String, Refusal> {
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
        req: &RequestHeader,
        connection: &Connection,
        source: &ClientCertificateSource,
    ) -> Result<Option<String>, Refusal> {
        match source {
            ClientCertificateSource::Handshake => Ok(connection.certificate_thumbprint.clone()),
            ClientCertificateSource::ProxyHeader { trusted, format } => {
                if !connection.peer.is_some_and(|ip| trusted.iter().any(|c| c.contains(ip))) {
                    // Anyone else's certificate headers are not believed (and are removed upstream).
                    return Ok(None);
                }
                let chain = certificate_from_header(&req.headers, *format).map_err(|_| Refusal::InvalidRequest {
                    description: "the client certificate header is malformed",
                    field: "Client-Cert",
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
}

/// The body as JSON; duplicate members are refused, since the bank's parser might read
/// the other one.
async fn read_json(request: &mut dyn Request, limit: usize) -> Result<Value, Refusal> {
    let bytes = request.read_body(limit).await?;
    crate::strict_json::parse(&bytes).map_err(|_| Refusal::InvalidRequest {
        description: "the request body is not JSON, or names a member twice",
        field: "body",
    })
}
