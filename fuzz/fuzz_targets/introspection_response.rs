//! Introspection responses: the JSON (`strict_json::parse`), its reading
//! (`TokenInfo::from_response`), and every route's checks of the repository's policies on
//! it (`RouteMatch::evaluate` and `run_checks`, i.e. claim-path evaluation); the document
//! is also the request body, for routes that read the body's consent. RFC 9701 signed
//! responses: the claims of a compact JWS (`strict_json::jws_payload`), on the input
//! itself and on the input as a JWS payload.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fapi_enforcement::introspection::{TokenInfo, STANDARD_MEMBERS};
use fapi_enforcement::policy::{Explanation, Presented};
use fapi_enforcement::strict_json;
use fapi_gateway_fuzz::{policies, sample_requests, NOW};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = strict_json::jws_payload(text);
    }
    let parsed = strict_json::parse(data);
    let jws = format!("eyJhbGciOiJFUzI1NiJ9.{}.c2ln", URL_SAFE_NO_PAD.encode(data));
    assert_eq!(strict_json::jws_payload(&jws), parsed, "a JWS payload reads as the same JSON would");
    let Ok(body) = parsed else { return };

    let Ok(info) = TokenInfo::from_response(body.clone()) else { return };
    if info.active {
        // The claims are every member but the standard ones, unchanged.
        let claims = info.claims.to_value();
        if let Value::Object(members) = &body {
            let mut rest = members.clone();
            rest.retain(|k, _| !STANDARD_MEMBERS.contains(&k.as_str()));
            assert_eq!(claims, Value::Object(rest));
        }
    }
    let presented =
        Presented { certificate_thumbprint: Some("THUMB"), body: Some(&body), dpop_thumbprint: Some("JKT") };
    for (method, path) in sample_requests() {
        let matched = policies().route(method, path, None).expect("a sample request has a route");
        let decided = matched.evaluate(&info, presented, NOW);
        let mut explanation = Explanation::default();
        let explained = matched.run_checks(&info, presented, NOW, &mut explanation);
        // explain decides as the gateway does.
        assert_eq!(decided.as_ref().err(), explained.as_ref().err());
        assert_eq!(decided.is_ok(), explanation.checks.iter().all(|(_, outcome)| outcome.is_ok()));
    }
});
