//! Every way the gateway says no, and the one response each maps to: the status, the
//! RFC 6750 `WWW-Authenticate` challenge and an Open Banking error body. The proxy adds
//! `x-fapi-interaction-id`; nothing else writes refusal responses.

use bytes::Bytes;
use serde_json::json;

/// Why a request was refused. `reason()` names it in logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credentials at all: 401 with a bare challenge (RFC 6750 §3.1).
    MissingCredentials,
    /// Malformed request, e.g. a token in the query or two `Authorization` headers.
    InvalidRequest {
        /// Fixed text for the challenge and the error body.
        description: &'static str,
        /// The part of the request at fault (the error body's `Path`).
        field: &'static str,
    },
    /// The token is unknown, inactive, expired or malformed.
    InvalidToken {
        /// Fixed text for the challenge and the error body.
        description: &'static str,
    },
    /// The token is not bound to this connection's client certificate (RFC 8705 §3).
    CertificateMismatch,
    /// The DPoP proof is missing or invalid (RFC 9449 §7.1).
    InvalidDpopProof {
        /// What is wrong with the proof, for the error body (the challenge's text is fixed).
        description: String,
    },
    /// The proof must carry the server's nonce (RFC 9449 §8).
    UseDpopNonce {
        /// The nonce to use, sent in `DPoP-Nonce`.
        nonce: String,
    },
    /// The token is DPoP-bound to another key, or a DPoP-bound token came as `Bearer`.
    DpopMismatch,
    /// The token lacks a scope the route requires.
    InsufficientScope {
        /// The missing scope, or the route's `scopes_any`, space-separated.
        scope: String,
    },
    /// The route is not open to this client.
    ClientNotAllowed {
        /// The token's client id (empty when it has none).
        client_id: String,
    },
    /// The customer did not authenticate as strongly as the route requires (RFC 9470).
    InsufficientAcr {
        /// The token's `acr` (empty when it has none).
        acr: String,
        /// The values the route accepts, space-separated (the challenge's `acr_values`).
        required: String,
    },
    /// The request body is larger than the route reads, or than the gateway forwards.
    BodyTooLarge,
    /// Too many request headers, or too many bytes of them.
    HeadersTooLarge,
    /// The token's consent does not allow this request.
    Consent(ConsentRefusal),
    /// No route has this path (deny by default).
    NoRoute {
        /// Whether the path is under an API's prefix (an unknown or disabled route of an
        /// API), rather than under none.
        in_api: bool,
    },
    /// A route has this path, for other methods.
    MethodNotAllowed {
        /// The methods it is served for, comma-separated (the `Allow` header).
        allow: String,
    },
    /// The request's Host is not one of the listener's `server_names`.
    MisdirectedRequest,
    /// The authorization server could not answer; nothing unverified passes.
    AuthorizationServerUnavailable {
        /// Sent as `Retry-After`.
        retry_after_seconds: u64,
    },
    /// The bank's backend could not be reached or failed mid-response.
    UpstreamUnavailable,
    /// The bank's backend did not connect or answer within its upstream's timeouts.
    UpstreamTimeout,
    /// Over a rate limit, a quota or PSD2's unattended-access limit (RFC 6585 §4).
    TooManyRequests(Box<crate::traffic::LimitExceeded>),
}

/// How a consent failed a route's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsentRefusal {
    /// The token carries no consent id.
    Missing {
        /// Where the API's mapping looks for it (`ConsentId`).
        claim: String,
    },
    /// The introspection response lacks the consent claim the API's mapping names (the
    /// consent's `status`).
    ClaimMissing {
        /// What is missing, for the message (`status`).
        element: &'static str,
        /// Where the API's mapping looks for it.
        claim: String,
    },
    /// The consent's status does not grant access (UK `AwaitingAuthorisation`, `Revoked`).
    Status {
        /// The status found (empty when there is none).
        status: String,
    },
    /// The consent's expiry has passed, or cannot be read.
    Expired,
    /// The consent lacks a permission the route needs.
    Permission {
        /// What is missing, as the message shows it: one permission, or `one of` a group.
        needed: String,
    },
    /// The account the path names is not one the consent granted.
    AccountNotGranted {
        /// The account id as the path gives it.
        account: String,
    },
    /// The request names another consent than the token's.
    Mismatch,
    /// The consent is of another kind than the route needs (an account-access consent
    /// on a payment route).
    Kind {
        /// The consent's kind (empty when the token has none).
        kind: String,
        /// The kinds the route accepts, comma-separated.
        needed: String,
    },
}

/// A refusal as it goes on the wire (the interaction id header is added by the proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalResponse {
    /// The HTTP status.
    pub status: u16,
    /// The RFC 6750 (or RFC 9449 `DPoP`) challenge, for refusals that carry one.
    pub www_authenticate: Option<String>,
    /// Seconds for `Retry-After`, when the authorization server is unavailable.
    pub retry_after: Option<u64>,
    /// The nonce for `DPoP-Nonce` (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
    /// The methods for `Allow`, on a 405 (RFC 9110 §15.5.6).
    pub allow: Option<String>,
    /// The `RateLimit-Policy` and `RateLimit` fields, for a request over a limit.
    pub rate_limit: Option<crate::traffic::RateLimitFields>,
    /// The Open Banking error body (JSON with `Code`, `Id`, `Message` and `Errors`).
    pub body: Bytes,
}

impl Refusal {
    /// A stable snake_case name: the `decision` label of `fapi_gateway_requests_total` and
    /// the access log's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::MissingCredentials => "missing_token",
            Refusal::InvalidRequest { .. } => "invalid_request",
            Refusal::InvalidToken { .. } => "invalid_token",
            Refusal::CertificateMismatch => "cert_mismatch",
            Refusal::InvalidDpopProof { .. } => "invalid_dpop_proof",
            Refusal::UseDpopNonce { .. } => "use_dpop_nonce",
            Refusal::DpopMismatch => "dpop_mismatch",
            Refusal::InsufficientScope { .. } => "insufficient_scope",
            Refusal::ClientNotAllowed { .. } => "client_not_allowed",
            Refusal::InsufficientAcr { .. } => "insufficient_acr",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::Consent(ConsentRefusal::Missing { .. }) => "consent_missing",
            Refusal::Consent(ConsentRefusal::ClaimMissing { .. }) => "consent_claim_missing",
            Refusal::Consent(ConsentRefusal::Status { .. }) => "consent_status",
            Refusal::Consent(ConsentRefusal::Expired) => "consent_expired",
            Refusal::Consent(ConsentRefusal::Permission { .. }) => "permission_missing",
            Refusal::Consent(ConsentRefusal::AccountNotGranted { .. }) => "account_not_granted",
            Refusal::Consent(ConsentRefusal::Mismatch) => "consent_mismatch",
            Refusal::Consent(ConsentRefusal::Kind { .. }) => "consent_kind",
            Refusal::NoRoute { .. } => "no_route",
            Refusal::MethodNotAllowed { .. } => "method_not_allowed",
            Refusal::MisdirectedRequest => "misdirected_request",
            Refusal::AuthorizationServerUnavailable { .. } => "as_unavailable",
            Refusal::UpstreamUnavailable => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::TooManyRequests(l) if l.unattended => "unattended_limit",
            Refusal::TooManyRequests(_) => "rate_limited",
        }
    }

    /// The HTTP status of the response.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::InvalidRequest { .. } => 400,
            Refusal::MissingCredentials
            | Refusal::InvalidToken { .. }
            | Refusal::CertificateMismatch
            | Refusal::InvalidDpopProof { .. }
            | Refusal::UseDpopNonce { .. }
            | Refusal::DpopMismatch => 401,
            Refusal::InsufficientScope { .. } | Refusal::Consent(_) | Refusal::ClientNotAllowed { .. } => 403,
            Refusal::InsufficientAcr { .. } => 401,
            Refusal::BodyTooLarge => 413,
            Refusal::HeadersTooLarge => 431,
            Refusal::NoRoute { .. } => 404,
            Refusal::MethodNotAllowed { .. } => 405,
            Refusal::MisdirectedRequest => 421,
            Refusal::UpstreamUnavailable => 502,
            Refusal::UpstreamTimeout => 504,
            Refusal::AuthorizationServerUnavailable { .. } => 503,
            Refusal::TooManyRequests(_) => 429,
        }
    }

    /// The RFC 6750 challenge. Descriptions are fixed text: nothing the client sent is
    /// reflected into a header.
    fn challenge(&self) -> Option<String> {
        let c = match self {
            Refusal::MissingCredentials => r#"Bearer realm="fapi-gateway""#.to_string(),
            Refusal::InvalidRequest { description, .. } => {
                format!(r#"Bearer realm="fapi-gateway", error="invalid_request", error_description="{description}""#)
            }
            Refusal::InvalidToken { description } => {
                format!(r#"Bearer realm="fapi-gateway", error="invalid_token", error_description="{description}""#)
            }
            Refusal::CertificateMismatch => r#"Bearer realm="fapi-gateway", error="invalid_token", error_description="the access token is not bound to this client certificate""#.to_string(),
            Refusal::InsufficientScope { scope } => format!(
                r#"Bearer realm="fapi-gateway", error="insufficient_scope", scope="{}", error_description="the access token lacks a required scope""#,
                scope_token(scope)
            ),
            Refusal::Consent(_) => r#"Bearer realm="fapi-gateway", error="insufficient_scope", error_description="the consent does not allow this request""#.to_string(),
            Refusal::InvalidDpopProof { .. } => format!(
                r#"DPoP algs="{}", error="invalid_dpop_proof", error_description="the DPoP proof is missing or invalid""#,
                crate::dpop::ALGORITHMS
            ),
            Refusal::UseDpopNonce { .. } => format!(
                r#"DPoP algs="{}", error="use_dpop_nonce", error_description="the DPoP proof must carry the server's nonce""#,
                crate::dpop::ALGORITHMS
            ),
            Refusal::DpopMismatch => format!(
                r#"DPoP algs="{}", error="invalid_token", error_description="the access token is not bound to the DPoP proof's key""#,
                crate::dpop::ALGORITHMS
            ),
            Refusal::ClientNotAllowed { .. } => r#"Bearer realm="fapi-gateway", error="insufficient_scope", error_description="this route is not open to this client""#.to_string(),
            Refusal::InsufficientAcr { required, .. } => format!(
                r#"Bearer realm="fapi-gateway", error="insufficient_user_authentication", error_description="a stronger authentication is required", acr_values="{}""#,
                scope_token_list(required)
            ),
            _ => return None,
        };
        Some(c)
    }

    /// (Open Banking error code, message, the field at fault).
    fn detail(&self) -> (&'static str, String, &'static str) {
        match self {
            Refusal::MissingCredentials => (
                code::HEADER_MISSING,
                "no access token: send it as `Authorization: Bearer <token>`".into(),
                "Authorization",
            ),
            Refusal::InvalidRequest { description, field } => {
                (invalid_request_code(field), (*description).into(), field)
            }
            Refusal::InvalidToken { description } => (code::HEADER_INVALID, (*description).into(), "Authorization"),
            Refusal::CertificateMismatch => (
                code::HEADER_INVALID,
                "the access token is not bound to the client certificate of this connection (cnf.x5t#S256)".into(),
                "Authorization",
            ),
            Refusal::InsufficientScope { scope } => (
                code::CONSENT_MISMATCH,
                format!("the access token lacks the scope `{}`", truncate(scope)),
                "Authorization",
            ),
            Refusal::InvalidDpopProof { description } => {
                (code::HEADER_INVALID, format!("DPoP proof: {}", truncate(description)), "DPoP")
            }
            Refusal::UseDpopNonce { .. } => {
                (code::HEADER_INVALID, "the DPoP proof must carry the nonce in DPoP-Nonce".into(), "DPoP")
            }
            Refusal::DpopMismatch => (
                code::HEADER_INVALID,
                "the access token is not bound to the DPoP proof's key (cnf.jkt), or a DPoP-bound token came as Bearer"
                    .into(),
                "Authorization",
            ),
            Refusal::ClientNotAllowed { client_id } => (
                code::CONSENT_MISMATCH,
                format!("client `{}` may not use this API", truncate(client_id)),
                "Authorization",
            ),
            Refusal::InsufficientAcr { acr, required } => (
                code::REAUTHENTICATE,
                format!(
                    "the customer authenticated with acr `{}`; this API needs one of `{}`",
                    truncate(acr),
                    truncate(required)
                ),
                "Authorization",
            ),
            Refusal::BodyTooLarge => (code::FIELD_INVALID, "the request body is too large".into(), "body"),
            Refusal::HeadersTooLarge => {
                (code::HEADER_INVALID, "too many request headers, or too large".into(), "headers")
            }
            Refusal::Consent(c) => match c {
                ConsentRefusal::Missing { claim } => (
                    code::CONSENT_MISMATCH,
                    format!(
                        "the access token carries no consent: its introspection response has no `{}`",
                        truncate(claim)
                    ),
                    "Authorization",
                ),
                ConsentRefusal::ClaimMissing { element, claim } => (
                    if *element == "status" { code::INVALID_CONSENT_STATUS } else { code::CONSENT_MISMATCH },
                    format!(
                        "the consent's {element} is missing: the introspection response has no `{}`",
                        truncate(claim)
                    ),
                    "Authorization",
                ),
                ConsentRefusal::Status { status } => (
                    code::INVALID_CONSENT_STATUS,
                    format!("the consent's status is `{}`, which does not grant access", truncate(status)),
                    "Authorization",
                ),
                ConsentRefusal::Expired => {
                    (code::INVALID_CONSENT_STATUS, "the consent has expired".into(), "Authorization")
                }
                ConsentRefusal::Permission { needed } => (
                    code::CONSENT_MISMATCH,
                    format!("the consent lacks the permission {}", truncate(needed)),
                    "Authorization",
                ),
                ConsentRefusal::AccountNotGranted { account } => (
                    code::CONSENT_MISMATCH,
                    format!("account `{}` is not one the consent granted", truncate(account)),
                    "AccountId",
                ),
                ConsentRefusal::Mismatch => (
                    code::CONSENT_MISMATCH,
                    "the request names another consent than the access token's".into(),
                    "Data.ConsentId",
                ),
                ConsentRefusal::Kind { kind, needed } if kind.is_empty() => (
                    code::CONSENT_MISMATCH,
                    format!(
                        "the consent's kind is missing from the introspection response; this API needs {}",
                        truncate(needed)
                    ),
                    "Authorization",
                ),
                ConsentRefusal::Kind { kind, needed } => (
                    code::CONSENT_MISMATCH,
                    format!(
                        "the access token's consent is of kind `{}`; this API needs {}",
                        truncate(kind),
                        truncate(needed)
                    ),
                    "Authorization",
                ),
            },
            Refusal::NoRoute { in_api: false } => (code::NOT_FOUND, "no API is served at this path".into(), "path"),
            Refusal::NoRoute { in_api: true } => {
                (code::NOT_FOUND, "this API serves no resource at this path".into(), "path")
            }
            Refusal::MethodNotAllowed { allow } => (
                code::NOT_FOUND,
                format!("this path is not served for this method (it is for {})", truncate(allow)),
                "method",
            ),
            Refusal::MisdirectedRequest => {
                (code::HEADER_INVALID, "this gateway does not serve the requested host".into(), "Host")
            }
            Refusal::AuthorizationServerUnavailable { .. } => (
                code::UNEXPECTED_ERROR,
                "the authorization server could not verify the access token; retry later".into(),
                "Authorization",
            ),
            Refusal::UpstreamUnavailable => {
                (code::UNEXPECTED_ERROR, "the bank's API could not be reached".into(), "path")
            }
            Refusal::UpstreamTimeout => {
                ("UK.OBIE.UnexpectedError", "the bank's API did not answer in time".into(), "path")
            }
            // The customer's presence is what lifts this limit: the header is what is missing.
            Refusal::TooManyRequests(l) if l.unattended => (
                "UK.OBIE.Header.Missing",
                format!(
                    "without the customer present (no x-fapi-customer-ip-address) this consent may read this account no more often (PSD2 RTS Art. 36(5)); retry after {} seconds",
                    l.retry_after_seconds
                ),
                crate::traffic::CUSTOMER_IP_HEADER,
            ),
            // Open Banking defines no error code for traffic limits.
            Refusal::TooManyRequests(l) => (
                "UK.OBIE.UnexpectedError",
                format!("over the limit `{}` of this API; retry after {} seconds", truncate(&l.rule), l.retry_after_seconds),
                "path",
            ),
        }
    }

    /// One line for people: status, Open Banking code and message.
    pub fn summary(&self) -> String {
        let (code, message, _) = self.detail();
        format!("{} {code} ({}): {message}", self.status(), self.reason())
    }

    /// The whole response for this refusal.
    pub fn to_response(&self, interaction_id: &str) -> RefusalResponse {
        let status = self.status();
        let (code, message, field) = self.detail();
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error")
            .replace(' ', "");
        let body = json!({
            "Code": format!("{status} {reason}"),
            "Id": interaction_id,
            "Message": message,
            "Errors": [{ "ErrorCode": code, "Message": message, "Path": field }],
        });
        RefusalResponse {
            status,
            www_authenticate: self.challenge(),
            retry_after: match self {
                Refusal::AuthorizationServerUnavailable { retry_after_seconds } => Some(*retry_after_seconds),
                Refusal::TooManyRequests(l) => Some(l.retry_after_seconds),
                _ => None,
            },
            rate_limit: match self {
                Refusal::TooManyRequests(l) => Some(l.fields.clone()),
                _ => None,
            },
            dpop_nonce: match self {
                Refusal::UseDpopNonce { nonce } => Some(nonce.clone()),
                _ => None,
            },
            allow: match self {
                Refusal::MethodNotAllowed { allow } => Some(allow.clone()),
                _ => None,
            },
            body: Bytes::from(body.to_string()),
        }
    }
}

/// The Open Banking error codes the gateway uses, all from the Read/Write API
/// specification's standard error codes (`ErrorCode`): one per kind of fault.
pub mod code {
    /// A required header is absent (`Authorization`).
    pub const HEADER_MISSING: &str = "UK.OBIE.Header.Missing";
    /// A header is malformed or its value refused (the token, the DPoP proof, `Host`).
    pub const HEADER_INVALID: &str = "UK.OBIE.Header.Invalid";
    /// A field of the request (path, query, body member) is invalid.
    pub const FIELD_INVALID: &str = "UK.OBIE.Field.Invalid";
    /// A field the request must carry is absent (the body's `Data.ConsentId`).
    pub const FIELD_MISSING: &str = "UK.OBIE.Field.Missing";
    /// A field the request must not carry is present (a token in the query).
    pub const FIELD_UNEXPECTED: &str = "UK.OBIE.Field.Unexpected";
    /// The request body is not of the shape the endpoint takes.
    pub const RESOURCE_INVALID_FORMAT: &str = "UK.OBIE.Resource.InvalidFormat";
    /// The consent (or the token's scopes and client) does not cover this request.
    pub const CONSENT_MISMATCH: &str = "UK.OBIE.Resource.ConsentMismatch";
    /// The consent's status or expiry does not grant access.
    pub const INVALID_CONSENT_STATUS: &str = "UK.OBIE.Resource.InvalidConsentStatus";
    /// No resource is served at this path (or for this method).
    pub const NOT_FOUND: &str = "UK.OBIE.Resource.NotFound";
    /// The customer must authenticate again, more strongly.
    pub const REAUTHENTICATE: &str = "UK.OBIE.Reauthenticate";
    /// Something on the gateway's side failed (the authorization server, the bank).
    pub const UNEXPECTED_ERROR: &str = "UK.OBIE.UnexpectedError";
}

/// The code for a malformed request, by the part at fault: a header, a field of the
/// path or query, or the body.
fn invalid_request_code(field: &str) -> &'static str {
    match field {
        "path" => code::FIELD_INVALID,
        "access_token" => code::FIELD_UNEXPECTED,
        "body" => code::RESOURCE_INVALID_FORMAT,
        f if f.starts_with("Data.") => code::FIELD_MISSING,
        _ => code::HEADER_INVALID,
    }
}

/// Scope names come from policy files, but are still filtered to RFC 6750's scope-token
/// characters before going into a header.
fn scope_token(s: &str) -> String {
    s.chars().filter(|&c| c == '\x21' || ('\x23'..='\x5b').contains(&c) || ('\x5d'..='\x7e').contains(&c)).collect()
}

/// A space-separated list of tokens, filtered as [`scope_token`] does.
fn scope_token_list(s: &str) -> String {
    s.split(' ').map(scope_token).collect::<Vec<_>>().join(" ")
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(128) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_follow_rfc6750() {
        let r = Refusal::MissingCredentials.to_response("id");
        assert_eq!(r.status, 401);
        assert_eq!(r.www_authenticate.as_deref(), Some(r#"Bearer realm="fapi-gateway""#));
        let r = Refusal::InsufficientScope { scope: "accounts".into() }.to_response("id");
        assert_eq!(r.status, 403);
        assert!(r.www_authenticate.unwrap().contains(r#"error="insufficient_scope", scope="accounts""#));
        let r = Refusal::InvalidRequest { description: "x", field: "y" }.to_response("id");
        assert_eq!(r.status, 400);
        assert!(r.www_authenticate.unwrap().contains(r#"error="invalid_request""#));
        let r = Refusal::AuthorizationServerUnavailable { retry_after_seconds: 7 }.to_response("id");
        assert_eq!((r.status, r.retry_after, r.www_authenticate), (503, Some(7), None));
    }

    #[test]
    fn body_is_open_banking_error() {
        let r = Refusal::Consent(ConsentRefusal::AccountNotGranted { account: "A9".into() }).to_response("iid");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["Code"], "403 Forbidden");
        assert_eq!(v["Id"], "iid");
        assert_eq!(v["Errors"][0]["ErrorCode"], "UK.OBIE.Resource.ConsentMismatch");
        assert!(v["Message"].as_str().unwrap().contains("A9"));
    }

    #[test]
    fn scope_in_challenge_is_filtered() {
        let r = Refusal::InsufficientScope { scope: "a\"b\\c d".into() }.to_response("id");
        assert!(r.www_authenticate.unwrap().contains(r#"scope="abcd""#));
    }

    /// Every refusal, once.
    fn every_refusal() -> Vec<Refusal> {
        let consent = |c| Refusal::Consent(c);
        vec![
            Refusal::MissingCredentials,
            Refusal::InvalidRequest { description: "d", field: "Authorization" },
            Refusal::InvalidRequest { description: "d", field: "path" },
            Refusal::InvalidRequest { description: "d", field: "body" },
            Refusal::InvalidRequest { description: "d", field: "access_token" },
            Refusal::InvalidRequest { description: "d", field: "Data.ConsentId" },
            Refusal::InvalidToken { description: "d" },
            Refusal::CertificateMismatch,
            Refusal::InvalidDpopProof { description: "d".into() },
            Refusal::UseDpopNonce { nonce: "n".into() },
            Refusal::DpopMismatch,
            Refusal::InsufficientScope { scope: "s".into() },
            Refusal::ClientNotAllowed { client_id: "c".into() },
            Refusal::InsufficientAcr { acr: "a".into(), required: "b".into() },
            Refusal::BodyTooLarge,
            Refusal::HeadersTooLarge,
            consent(ConsentRefusal::Missing { claim: "ConsentId".into() }),
            consent(ConsentRefusal::ClaimMissing { element: "status", claim: "Status".into() }),
            consent(ConsentRefusal::Status { status: "Revoked".into() }),
            consent(ConsentRefusal::Expired),
            consent(ConsentRefusal::Permission { needed: "p".into() }),
            consent(ConsentRefusal::AccountNotGranted { account: "a".into() }),
            consent(ConsentRefusal::Mismatch),
            consent(ConsentRefusal::Kind { kind: "k".into(), needed: "n".into() }),
            Refusal::NoRoute { in_api: false },
            Refusal::NoRoute { in_api: true },
            Refusal::MethodNotAllowed { allow: "GET".into() },
            Refusal::MisdirectedRequest,
            Refusal::AuthorizationServerUnavailable { retry_after_seconds: 1 },
            Refusal::UpstreamUnavailable,
        ]
    }

    #[test]
    fn every_error_code_is_a_standard_open_banking_code_and_the_top_code_is_status_and_reason() {
        // The Read/Write API specification's standard error codes.
        let standard = [
            "UK.OBIE.Field.Expected",
            "UK.OBIE.Field.Invalid",
            "UK.OBIE.Field.InvalidDate",
            "UK.OBIE.Field.Missing",
            "UK.OBIE.Field.Unexpected",
            "UK.OBIE.Header.Invalid",
            "UK.OBIE.Header.Missing",
            "UK.OBIE.Reauthenticate",
            "UK.OBIE.Resource.ConsentMismatch",
            "UK.OBIE.Resource.InvalidConsentStatus",
            "UK.OBIE.Resource.InvalidFormat",
            "UK.OBIE.Resource.NotFound",
            "UK.OBIE.UnexpectedError",
        ];
        for refusal in every_refusal() {
            let v: serde_json::Value = serde_json::from_slice(&refusal.to_response("i").body).unwrap();
            let code = v["Errors"][0]["ErrorCode"].as_str().unwrap();
            assert!(standard.contains(&code), "{refusal:?}: {code}");
            let top = v["Code"].as_str().unwrap();
            let (status, reason) = top.split_once(' ').unwrap();
            assert_eq!(status, refusal.status().to_string());
            assert!(reason.chars().all(|c| c.is_ascii_alphabetic()) && !reason.is_empty(), "{top}");
        }
        let code = |r: Refusal| {
            let v: serde_json::Value = serde_json::from_slice(&r.to_response("i").body).unwrap();
            v["Errors"][0]["ErrorCode"].as_str().unwrap().to_string()
        };
        assert_eq!(
            code(Refusal::InvalidRequest { description: "d", field: "Data.ConsentId" }),
            "UK.OBIE.Field.Missing"
        );
        assert_eq!(code(Refusal::InvalidRequest { description: "d", field: "path" }), "UK.OBIE.Field.Invalid");
    }

    #[test]
    fn a_405_carries_allow_and_a_missing_claim_says_it_is_missing() {
        let r = Refusal::MethodNotAllowed { allow: "GET, POST".into() }.to_response("i");
        assert_eq!((r.status, r.allow.as_deref()), (405, Some("GET, POST")));
        assert_eq!(Refusal::NoRoute { in_api: true }.to_response("i").allow, None);
        let missing = Refusal::Consent(ConsentRefusal::ClaimMissing { element: "status", claim: "Status".into() });
        let summary = missing.summary();
        assert!(summary.contains("status is missing") && summary.contains("`Status`"), "{summary}");
        assert!(!summary.contains("``"), "{summary}");
        let unknown = Refusal::NoRoute { in_api: true }.summary();
        assert!(!unknown.contains("no API"), "{unknown}");
    }
}
