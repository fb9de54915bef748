//! The bearer credentials of a request: the `Authorization` header(s) and the query
//! (`credentials::credentials`), then the DPoP proof (`DpopVerifier::verify`).
//!
//! Input: lines. 1: an `Authorization` value; 2: the query; 3: a `DPoP` proof; each
//! further line: one more `Authorization` value.
#![no_main]

use std::time::Duration;

use fapi_enforcement::config::DpopConfig;
use fapi_enforcement::credentials::{credentials, MAX_TOKEN_LEN};
use fapi_enforcement::dpop::DpopVerifier;
use fapi_gateway_fuzz::NOW;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const HTU: &str = "https://gateway.example/gobank/accounts";

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let query = lines.next().map(String::from_utf8_lossy);
    let proof = lines.next().map(String::from_utf8_lossy).unwrap_or_default();

    let mut headers = HeaderMap::new();
    for value in std::iter::once(first).chain(lines) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(AUTHORIZATION, v);
        }
    }
    let token = match credentials(&headers, query.as_deref().filter(|q| !q.is_empty())) {
        Ok((_, token)) => {
            // RFC 6750 b64token, within the length limit, and one header only.
            assert!(!token.is_empty() && token.len() <= MAX_TOKEN_LEN, "{token:?}");
            let body = token.trim_end_matches('=');
            assert!(!body.is_empty() && body.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)));
            assert_eq!(headers.get_all(AUTHORIZATION).iter().count(), 1);
            Some(token)
        }
        Err(_) => None,
    };

    // A verifier per input: its replay cache would make a crash depend on earlier inputs.
    let verifier = DpopVerifier::new(&DpopConfig {
        max_age: Duration::from_secs(300),
        external_url: Some("https://gateway.example".into()),
        require_nonce: false,
        replay_capacity: 16,
    });
    if let Ok(thumbprint) = verifier.verify(&proof, "GET", HTU, token, NOW) {
        // A proof is good once: the same one again is a replay.
        assert!(verifier.verify(&proof, "GET", HTU, token, NOW).is_err(), "replayed proof accepted");
        assert!(!thumbprint.is_empty());
    }
});
