//! The access token, read from the `Authorization` header only (RFC 6750 §2.1; FAPI
//! refuses the query and form-body methods), under the `Bearer` or `DPoP` (RFC 9449)
//! scheme.

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::refusal::Refusal;

/// Longest token accepted; opaque tokens are far shorter, JWTs a few kilobytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RFC 6750 `Bearer`: no proof of possession beyond a bound client certificate (RFC 8705).
    Bearer,
    /// With a `DPoP` proof header (RFC 9449).
    Dpop,
}

/// The access token of a request and its scheme, or the refusal for its credentials.
pub fn credentials<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<(Scheme, &'a str), Refusal> {
    if query.is_some_and(query_has_token) {
        return Err(Refusal::InvalidRequest {
            description: "access tokens are accepted only in the Authorization header",
            field: "access_token",
        });
    }
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(Refusal::MissingCredentials);
    };
    if values.next().is_some() {
        return Err(Refusal::InvalidRequest {
            description: "more than one Authorization header",
            field: "Authorization",
        });
    }
    let malformed = Refusal::InvalidRequest { description: "malformed Authorization header", field: "Authorization" };
    let value = value.to_str().map_err(|_| malformed.clone())?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else {
        // An unsupported scheme is "no credentials" for this server (RFC 6750 §3.1).
        return Err(Refusal::MissingCredentials);
    };
    let token = rest.trim_start_matches(' ');
    if is_b64token(token) {
        Ok((scheme, token))
    } else {
        Err(malformed)
    }
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(t: &str) -> bool {
    if t.is_empty() || t.len() > MAX_TOKEN_LEN {
        return false;
    }
    let body = t.trim_end_matches('=');
    !body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn query_has_token(query: &str) -> bool {
    query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        percent_encoding::percent_decode_str(name).decode_utf8_lossy() == "access_token"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    fn bearer_token<'a>(headers: &'a HeaderMap, query: Option<&str>) -> Result<&'a str, Refusal> {
        credentials(headers, query).map(|(_, token)| token)
    }

    #[test]
    fn reads_bearer_tokens() {
        assert_eq!(bearer_token(&headers(&["Bearer abc.DEF-_~+/=="]), None), Ok("abc.DEF-_~+/=="));
        assert_eq!(bearer_token(&headers(&["bearer  abc"]), Some("x=1")), Ok("abc"));
        assert_eq!(credentials(&headers(&["DPoP abc"]), None), Ok((Scheme::Dpop, "abc")));
    }

    #[test]
    fn refuses_everything_else() {
        assert_eq!(bearer_token(&headers(&[]), None), Err(Refusal::MissingCredentials));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpwYXNz"]), None), Err(Refusal::MissingCredentials));
        for bad in ["Bearer", "Bearer ", "Bearer a b", "Bearer a\"b", "Bearer ==", "Bearer a=b"] {
            assert!(matches!(bearer_token(&headers(&[bad]), None), Err(Refusal::InvalidRequest { .. })), "{bad}");
        }
        let long = format!("Bearer {}", "a".repeat(MAX_TOKEN_LEN + 1));
        assert!(matches!(bearer_token(&headers(&[&long]), None), Err(Refusal::InvalidRequest { .. })));
        assert!(matches!(bearer_token(&headers(&["Bearer a", "Bearer b"]), None), Err(Refusal::InvalidRequest { .. })));
        assert!(matches!(
            bearer_token(&headers(&["Bearer a"]), Some("x=1&access%5Ftoken=a")),
            Err(Refusal::InvalidRequest { field: "access_token", .. })
        ));
        assert!(matches!(bearer_token(&headers(&[]), Some("access_token=a")), Err(Refusal::InvalidRequest { .. })));
    }
}
