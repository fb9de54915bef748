//! RFC 9449 DPoP proofs: the FAPI 2.0 alternative to certificate-bound tokens. A request
//! `Authorization: DPoP <token>` carries a `DPoP` header, a JWT signed by the client's
//! key, naming the method and URL, fresh, never seen before, and hashing the token; the
//! token's `cnf.jkt` must be that key's RFC 7638 thumbprint.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::sync::Cache;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// RFC 9449 proof checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopConfig {
    /// Oldest a proof may be, by its `iat`; `jti`s are remembered as long (plus a few seconds
    /// of clock skew).
    pub max_age: Duration,
    /// The gateway's public base URL (`https://api.bank.example`) that proofs' `htu` must
    /// start with; `None`: `https://` and the request's verified Host.
    pub external_url: Option<String>,
    /// Whether proofs must carry a server-issued nonce (RFC 9449 §8), sent in `DPoP-Nonce`.
    pub require_nonce: bool,
    /// Most proofs remembered at once to refuse a replayed `jti`.
    pub replay_capacity: u64,
}

/// The algorithms accepted for proofs (asymmetric only), as announced in challenges.
pub const ALGORITHMS: &str = "ES256 PS256 RS256 EdDSA";

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofError {
    /// Malformed, badly signed, stale, replayed, or for another request or token; the text
    /// says which.
    Invalid(String),
    /// The server wants its nonce in the proof (RFC 9449 §8).
    UseNonce(String),
}

fn invalid(m: impl Into<String>) -> ProofError {
    ProofError::Invalid(m.into())
}

/// Server-issued nonces: a random value that changes every `lifetime`; the previous one is
/// still accepted so a client racing the change is not refused.
struct Nonces {
    lifetime: Duration,
    state: Mutex<(String, String, Instant)>,
}

impl Nonces {
    fn fresh() -> String {
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
    }

    fn current(&self) -> (String, String) {
        let mut s = self.state.lock().unwrap();
        if s.2.elapsed() >= self.lifetime {
            let previous = std::mem::replace(&mut s.0, Self::fresh());
            s.1 = previous;
            s.2 = Instant::now();
        }
        (s.0.clone(), s.1.clone())
    }
}

/// Checks proofs; remembers `jti`s for the proof lifetime to refuse replays.
pub struct DpopVerifier {
    max_age: Duration,
    external_url: Option<String>,
    nonces: Option<Nonces>,
    seen: Cache<[u8; 32], ()>,
}

/// Tolerated clock skew for proofs from the future.
const SKEW: u64 = 5;

impl DpopVerifier {
    /// A verifier for `config`, remembering no proof yet.
    pub fn new(config: &DpopConfig) -> DpopVerifier {
        DpopVerifier {
            max_age: config.max_age,
            external_url: config.external_url.clone(),
            nonces: config.require_nonce.then(|| Nonces {
                lifetime: Duration::from_secs(300),
                state: Mutex::new((Nonces::fresh(), Nonces::fresh(), Instant::now())),
            }),
            seen: Cache::builder()
                .max_capacity(config.replay_capacity)
                .time_to_live(config.max_age + Duration::from_secs(SKEW))
                .build(),
        }
    }

    /// The nonce to hand out, when nonces are required.
    pub fn nonce(&self) -> Option<String> {
        self.nonces.as_ref().map(|n| n.current().0)
    }

    /// The `htu` a proof for this request must name: the external URL (or `https://` and
    /// the request's host) and the path, without query or fragment.
    /// The URL a proof for `path` must name: under `dpop.external_url`, else under the
    /// request's Host, which the caller passes only once it has matched the listener's
    /// `server_names`; `None` when neither is known (the proof is then refused).
    pub fn expected_htu(&self, verified_host: Option<&str>, path: &str) -> Option<String> {
        match (&self.external_url, verified_host) {
            (Some(base), _) => Some(format!("{base}{path}")),
            (None, Some(host)) => Some(format!("https://{host}{path}")),
            (None, None) => None,
        }
    }

    /// Verifies `proof` for a request; returns the key's thumbprint (to compare with `cnf.jkt`).
    pub fn verify(
        &self,
        proof: &str,
        method: &str,
        htu: &str,
        access_token: Option<&str>,
        now: u64,
    ) -> Result<String, ProofError> {
        let header_b64 = proof.split('.').next().ok_or_else(|| invalid("not a JWT"))?;
        let header: Value = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| crate::strict_json::parse(&b).ok())
            .ok_or_else(|| invalid("the header is not base64url JSON, or names a member twice"))?;
        if header["typ"] != "dpop+jwt" {
            return Err(invalid("typ must be dpop+jwt"));
        }
        let alg = match header["alg"].as_str() {
            Some("ES256") => Algorithm::ES256,
            Some("PS256") => Algorithm::PS256,
            Some("RS256") => Algorithm::RS256,
            Some("EdDSA") => Algorithm::EdDSA,
            _ => return Err(invalid(format!("alg must be one of {ALGORITHMS}"))),
        };
        let jwk = header.get("jwk").filter(|j| j.is_object()).ok_or_else(|| invalid("no jwk in the header"))?;
        if jwk.get("d").is_some() {
            return Err(invalid("the jwk holds a private key"));
        }
        let parsed: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(jwk.clone()).map_err(|_| invalid("the jwk is not a public key"))?;
        let key = DecodingKey::from_jwk(&parsed).map_err(|_| invalid("the jwk is not usable"))?;
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(proof, &key, &validation).map_err(|e| invalid(format!("signature: {e}")))?;
        let claims = crate::strict_json::jws_payload(proof)
            .map_err(|_| invalid("the claims are not JSON, or name a member twice"))?;

        if claims["htm"].as_str() != Some(method) {
            return Err(invalid("htm does not match the request method"));
        }
        let claimed = claims["htu"].as_str().unwrap_or("");
        let claimed = claimed.split(['?', '#']).next().unwrap_or("");
        if !same_url(claimed, htu) {
            return Err(invalid("htu does not match the request URL"));
        }
        let iat = claims["iat"].as_u64().ok_or_else(|| invalid("no iat"))?;
        if iat > now + SKEW || iat + self.max_age.as_secs() < now {
            return Err(invalid("iat is outside the accepted window"));
        }
        if let Some(token) = access_token {
            let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()));
            if claims["ath"].as_str() != Some(expected.as_str()) {
                return Err(invalid("ath does not match the access token"));
            }
        }
        if let Some(nonces) = &self.nonces {
            let (current, previous) = nonces.current();
            match claims["nonce"].as_str() {
                Some(n) if n == current || n == previous => {}
                _ => return Err(ProofError::UseNonce(current)),
            }
        }
        let jti = claims["jti"].as_str().filter(|j| !j.is_empty()).ok_or_else(|| invalid("no jti"))?;
        let thumbprint = jwk_thumbprint(jwk).ok_or_else(|| invalid("unsupported jwk"))?;
        // Replays are per key: hash of thumbprint and jti.
        let seen_key: [u8; 32] = Sha256::digest(format!("{thumbprint}.{jti}").as_bytes()).into();
        let mut fresh = false;
        self.seen.entry(seen_key).or_insert_with(|| {
            fresh = true;
        });
        if !fresh {
            return Err(invalid("the proof was used before (jti)"));
        }
        Ok(thumbprint)
    }
}

/// URLs compare with scheme and host case-insensitive (RFC 9449 §4.3 points to RFC 3986 normalisation).
fn same_url(a: &str, b: &str) -> bool {
    let split = |u: &str| -> Option<(String, String)> {
        let (scheme, rest) = u.split_once("://")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.to_ascii_lowercase();
        let authority = authority.strip_suffix(":443").unwrap_or(&authority).to_string();
        Some((format!("{}://{authority}", scheme.to_ascii_lowercase()), path.to_string()))
    };
    matches!((split(a), split(b)), (Some(x), Some(y)) if x == y)
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
pub fn jwk_thumbprint(jwk: &Value) -> Option<String> {
    let s = |k: &str| jwk.get(k).and_then(Value::as_str);
    let canonical = match s("kty")? {
        "EC" => json!({"crv": s("crv")?, "kty": "EC", "x": s("x")?, "y": s("y")?}),
        "RSA" => json!({"e": s("e")?, "kty": "RSA", "n": s("n")?}),
        "OKP" => json!({"crv": s("crv")?, "kty": "OKP", "x": s("x")?}),
        _ => return None,
    };
    // serde_json writes object members sorted (no preserve_order), without whitespace.
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.to_string().as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"
        });
        assert_eq!(jwk_thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn urls_compare_normalised() {
        assert!(same_url("https://API.Bank.example:443/accounts", "https://api.bank.example/accounts"));
        assert!(!same_url("https://api.bank.example/accounts", "https://api.bank.example/Accounts"));
        assert!(!same_url("http://api.bank.example/accounts", "https://api.bank.example/accounts"));
    }
}
