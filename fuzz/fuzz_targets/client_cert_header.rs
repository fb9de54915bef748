//! The client certificate a trusted proxy forwards in a header
//! (`client_identity::certificate_from_header`), in both formats, and the verification of
//! whatever chain it yields against a fixed CA (`ClientVerifier::verify_presented`).
//!
//! Input: the first byte picks the format (even: RFC 9440 `Client-Cert`; odd:
//! `X-SSL-Client-Cert`); the rest is split in lines: the first is the certificate
//! header's value, each further line one more `Client-Cert-Chain` (or a second
//! `X-SSL-Client-Cert`) value.
#![no_main]

use std::sync::OnceLock;

use fapi_enforcement::client_identity::{certificate_from_header, thumbprint, ClientVerifier};
use fapi_enforcement::config::CertificateHeader;
use fapi_gateway_fuzz::repository;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static ClientVerifier {
    static VERIFIER: OnceLock<ClientVerifier> = OnceLock::new();
    // A development CA (public certificate only); fuzz/fixtures/tpp.pem chains to it.
    VERIFIER.get_or_init(|| {
        ClientVerifier::load(&repository().join("fuzz/fixtures/ca.pem"), &[]).expect("the fixture CA loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else { return };
    let (format, leaf_name, chain_name) = if selector % 2 == 0 {
        (CertificateHeader::Rfc9440, "client-cert", "client-cert-chain")
    } else {
        (CertificateHeader::XSslClientCert, "x-ssl-client-cert", "x-ssl-client-cert")
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let mut headers = HeaderMap::new();
    if let Some(Ok(v)) = lines.next().map(HeaderValue::from_bytes) {
        headers.append(HeaderName::from_static(leaf_name), v);
    }
    for line in lines {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(HeaderName::from_static(chain_name), v);
        }
    }
    match certificate_from_header(&headers, format) {
        Ok(None) => assert!(!headers.contains_key(leaf_name)),
        Ok(Some(chain)) => {
            assert!(!chain.is_empty());
            if let Ok(verified) = verifier().verify_presented(&chain) {
                assert_eq!(verified.thumbprint, thumbprint(&chain[0]));
            }
        }
        Err(_) => {}
    }
});
