//! JWS Compact Serialization (RFC 7515 §7.1) of the grant claims with the signing key.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::keys::KeySet;

/// Signing failed (the system's random number generator did not answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the grant JWT could not be signed")]
pub struct SignError;

/// `claims` signed by the set's signing key: `header.payload.signature`.
pub fn compact<C: Serialize>(keys: &KeySet, claims: &C) -> Result<String, SignError> {
    let key = keys.signing_key();
    let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
    let mut jwt = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 400);
    jwt.push_str(&key.header_b64);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
    let signature = key.sign(jwt.as_bytes(), &keys.rng).map_err(|_| SignError)?;
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
    Ok(jwt)
}

#[cfg(test)]
mod tests {
    use super::super::keys::{Algorithm, KeySet, SigningKey};
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, UnparsedPublicKey};

    fn pem(der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
    }

    /// Verifies with the published JWK only, as a bank would.
    fn verify(keys: &KeySet, jwt: &str) -> bool {
        let (signed, sig) = jwt.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        let jwk = keys.signing_key().jwk();
        let d = |m: &str| URL_SAFE_NO_PAD.decode(jwk[m].as_str().unwrap()).unwrap();
        match keys.signing_key().algorithm() {
            Algorithm::ES256 => {
                let point = [vec![4], d("x"), d("y")].concat();
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed.as_bytes(), &sig)
                    .is_ok()
            }
            Algorithm::EdDSA => {
                UnparsedPublicKey::new(&signature::ED25519, d("x")).verify(signed.as_bytes(), &sig).is_ok()
            }
            Algorithm::PS256 => signature::RsaPublicKeyComponents { n: d("n"), e: d("e") }
                .verify(&signature::RSA_PSS_2048_8192_SHA256, signed.as_bytes(), &sig)
                .is_ok(),
        }
    }

    #[test]
    fn every_algorithm_signs_what_its_published_key_verifies() {
        let rng = SystemRandom::new();
        let ec = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let ed = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let keys = [
            SigningKey::from_pem(Algorithm::ES256, Some("k"), pem(ec.as_ref()).as_bytes()).unwrap(),
            SigningKey::from_pem(Algorithm::EdDSA, Some("k"), pem(ed.as_ref()).as_bytes()).unwrap(),
            SigningKey::from_pem(Algorithm::PS256, Some("k"), include_bytes!("testdata/rsa2048.pem")).unwrap(),
        ];
        for key in keys {
            let alg = key.algorithm();
            let set = KeySet::new(vec![key], None).unwrap();
            let jwt = compact(&set, &serde_json::json!({"sub": "alice"})).unwrap();
            let header: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jwt.split('.').next().unwrap()).unwrap()).unwrap();
            assert_eq!(header["alg"], alg.name());
            assert_eq!(header["typ"], super::super::keys::JWT_TYPE);
            assert!(verify(&set, &jwt), "{alg:?}");
            // One changed byte of the payload and it no longer verifies.
            let mut parts: Vec<String> = jwt.split('.').map(String::from).collect();
            parts[1] = URL_SAFE_NO_PAD.encode(br#"{"sub":"mallory"}"#);
            assert!(!verify(&set, &parts.join(".")), "{alg:?}");
        }
    }
}
