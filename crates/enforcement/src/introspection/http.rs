//! Reading an authorization server's answers: bounded bodies, transport errors as
//! [`IntrospectionError`]s. Shared by the introspection client, discovery and the JWKS
//! of signed responses.

use serde_json::Value;

use super::IntrospectionError;

/// Largest response accepted; real ones are a few kilobytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 256 * 1024;

pub(super) fn transport_error(e: reqwest::Error) -> IntrospectionError {
    if e.is_timeout() {
        IntrospectionError::Timeout
    } else {
        IntrospectionError::Unreachable(error_chain(&e))
    }
}

/// The body, at most [`MAX_RESPONSE_BYTES`].
pub(super) async fn read_body(mut response: reqwest::Response) -> Result<Vec<u8>, IntrospectionError> {
    if response.content_length().is_some_and(|n| n as usize > MAX_RESPONSE_BYTES) {
        return Err(IntrospectionError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(IntrospectionError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A 200 response's JSON body.
pub(super) async fn read_json(sent: Result<reqwest::Response, reqwest::Error>) -> Result<Value, IntrospectionError> {
    let response = sent.map_err(transport_error)?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(IntrospectionError::Status(response.status().as_u16()));
    }
    let body = read_body(response).await?;
    serde_json::from_slice(&body).map_err(|_| IntrospectionError::Malformed("not JSON"))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
