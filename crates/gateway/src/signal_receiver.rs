//! RFC 8935 push delivery of Security Event Tokens, on the admin listener at
//! `signals.path`: `POST` with `Content-Type: application/secevent+jwt` (or Open Banking's
//! `application/jwt`), answered `202 Accepted` once the SET is verified and what it
//! revokes is applied, or `400` with `{"err": …, "description": …}` (RFC 8935 §2.4).
//!
//! The SET's signature by the transmitter's key authenticates it (RFC 8935 §5.1); a
//! transmitter may also be given a bearer secret its pushes must carry. The admin bearer
//! secret is not asked for: transmitters are not administrators. While a transmitter's
//! keys cannot be fetched the answer is `503` with `Retry-After`, so the SET is delivered
//! again rather than lost.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use crate::admin::AdminState;
use fapi_enforcement::signals::{SignalError, MAX_SET_BYTES};

/// Adds the push endpoint to the admin router when `[signals]` is configured.
pub fn route(router: Router<Arc<AdminState>>, state: &AdminState) -> Router<Arc<AdminState>> {
    match &state.signals {
        Some(receiver) => router.route(receiver.path(), post(receive)),
        None => router,
    }
}

async fn receive(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let Some(receiver) = &s.signals else { return StatusCode::NOT_FOUND.into_response() };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let result = if body.len() > MAX_SET_BYTES {
        Err(SignalError::Refused {
            code: fapi_enforcement::signals::ErrorCode::InvalidRequest,
            description: format!("a SET is at most {MAX_SET_BYTES} bytes"),
        })
    } else {
        receiver.receive(header("content-type"), header("authorization"), &body).await
    };
    match result {
        Ok(accepted) => {
            let mut evicted = 0;
            let count = accepted.revocations.len();
            for revocation in accepted.revocations {
                evicted += s.revocations.apply(revocation).await;
            }
            s.metrics.signals.with_label_values(&["accepted"]).inc();
            tracing::info!(
                transmitter = %accepted.transmitter,
                jti = %accepted.jti,
                events = ?accepted.events,
                revocations = count,
                evicted,
                "security event accepted"
            );
            StatusCode::ACCEPTED.into_response()
        }
        Err(SignalError::Refused { code, description }) => {
            s.metrics.signals.with_label_values(&[code.as_str()]).inc();
            tracing::warn!(err = code.as_str(), %description, "security event refused");
            let body = json!({"err": code.as_str(), "description": description});
            (StatusCode::BAD_REQUEST, Json(body)).into_response()
        }
        Err(SignalError::KeysUnavailable(description)) => {
            s.metrics.signals.with_label_values(&["unavailable"]).inc();
            tracing::warn!(%description, "security event not verified: the transmitter's keys are unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "5")], Json(json!({"description": description})))
                .into_response()
        }
    }
}
