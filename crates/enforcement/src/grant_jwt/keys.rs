//! The gateway's signing keys: ES256 (P-256), EdDSA (Ed25519) or PS256 (RSA) private keys
//! in PEM, each with a `kid`, and the JWKS that publishes their public halves.
//!
//! One key signs; every key is published, so a bank verifies JWTs signed before a
//! rotation until the old key is removed from the configuration.

use std::sync::atomic::{AtomicU64, Ordering};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A JWS signing algorithm the gateway signs with (RFC 7518, RFC 8037).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Algorithm {
    /// ECDSA with P-256 and SHA-256.
    #[default]
    ES256,
    /// Ed25519 (RFC 8037).
    EdDSA,
    /// RSASSA-PSS with SHA-256 and MGF1 with SHA-256.
    PS256,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::PS256 => "PS256",
        }
    }
}

enum Pair {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Ps256(RsaKeyPair),
}

/// One private key with its `kid` and its public JWK.
pub struct SigningKey {
    kid: String,
    algorithm: Algorithm,
    pair: Pair,
    jwk: Value,
    /// The protected header, base64url-encoded: the same for every JWT this key signs.
    pub(super) header_b64: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("algorithm", &self.algorithm).finish()
    }
}

/// The media type in the JWT's `typ` header (RFC 8725 §3.11 explicit typing).
pub const JWT_TYPE: &str = "fapi-grant+jwt";

impl SigningKey {
    /// Reads a private key from PEM: PKCS#8 (`BEGIN PRIVATE KEY`) for every algorithm,
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`) for PS256. Without a `kid`, the key's RFC 7638
    /// thumbprint is its `kid`.
    pub fn from_pem(algorithm: Algorithm, kid: Option<&str>, pem: &[u8]) -> Result<SigningKey, String> {
        let item = rustls_pemfile::read_one_from_slice(pem)
            .map_err(|e| format!("not a PEM private key: {e:?}"))?
            .map(|(item, _)| item)
            .ok_or("no PEM block found")?;
        let rejected = |e: ring::error::KeyRejected| format!("not a valid {} private key: {e}", algorithm.name());
        let pair = match (algorithm, item) {
            (Algorithm::ES256, rustls_pemfile::Item::Pkcs8Key(der)) => Pair::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der.secret_pkcs8_der(),
                    &SystemRandom::new(),
                )
                .map_err(rejected)?,
            ),
            (Algorithm::EdDSA, rustls_pemfile::Item::Pkcs8Key(der)) => {
                Pair::EdDsa(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).map_err(rejected)?)
            }
            (Algorithm::PS256, rustls_pemfile::Item::Pkcs8Key(der)) => {
                Pair::Ps256(RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).map_err(rejected)?)
            }
            (Algorithm::PS256, rustls_pemfile::Item::Pkcs1Key(der)) => {
                Pair::Ps256(RsaKeyPair::from_der(der.secret_pkcs1_der()).map_err(rejected)?)
            }
            (_, rustls_pemfile::Item::Sec1Key(_)) => {
                return Err(
                    "an `EC PRIVATE KEY` (SEC1) block: convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt -in key.pem`"
                        .into(),
                )
            }
            (alg, _) => return Err(format!("not a PKCS#8 private key for {}", alg.name())),
        };
        let mut jwk = public_jwk(&pair)?;
        let kid = match kid {
            Some(k) => k.to_string(),
            None => thumbprint(&jwk),
        };
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(algorithm.name());
        jwk["use"] = json!("sig");
        let header = json!({"alg": algorithm.name(), "typ": JWT_TYPE, "kid": kid});
        let header_b64 = URL_SAFE_NO_PAD.encode(header.to_string());
        Ok(SigningKey { kid, algorithm, pair, jwk, header_b64 })
    }

    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The public key as a JWK (with `kid`, `alg` and `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The JWS signature of `message` (ECDSA as `r || s`, RFC 7518 §3.4).
    pub(super) fn sign(&self, message: &[u8], rng: &SystemRandom) -> Result<Vec<u8>, ring::error::Unspecified> {
        match &self.pair {
            Pair::Es256(k) => Ok(k.sign(rng, message)?.as_ref().to_vec()),
            Pair::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
            Pair::Ps256(k) => {
                let mut out = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PSS_SHA256, rng, message, &mut out)?;
                Ok(out)
            }
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The public half as a JWK (RFC 7517/7518/8037), members in RFC 7638 order.
fn public_jwk(pair: &Pair) -> Result<Value, String> {
    Ok(match pair {
        Pair::Es256(k) => {
            // Uncompressed point: 0x04 || x || y.
            let point = k.public_key().as_ref();
            json!({"crv": "P-256", "kty": "EC", "x": b64(&point[1..33]), "y": b64(&point[33..65])})
        }
        Pair::EdDsa(k) => json!({"crv": "Ed25519", "kty": "OKP", "x": b64(k.public_key().as_ref())}),
        Pair::Ps256(k) => {
            let (n, e) = rsa_public_numbers(k.public().as_ref()).ok_or("cannot read the RSA public key")?;
            json!({"e": b64(e), "kty": "RSA", "n": b64(n)})
        }
    })
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
fn thumbprint(jwk: &Value) -> String {
    let required: &[&str] = match jwk["kty"].as_str() {
        Some("EC") => &["crv", "kty", "x", "y"],
        Some("OKP") => &["crv", "kty", "x"],
        _ => &["e", "kty", "n"],
    };
    let members: Vec<String> = required.iter().map(|m| format!("\"{m}\":{}", jwk[*m])).collect();
    b64(&Sha256::digest(format!("{{{}}}", members.join(","))))
}

/// `n` and `e` of a DER `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`), without
/// leading zeros.
fn rsa_public_numbers(der: &[u8]) -> Option<(&[u8], &[u8])> {
    fn element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (&t, rest) = input.split_first()?;
        if t != tag {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let count = (first & 0x7f) as usize;
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count].iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
            rest = &rest[count..];
            len
        };
        (rest.len() >= len).then(|| rest.split_at(len))
    }
    let strip = |i: &'_ [u8]| -> usize { i.iter().take_while(|b| **b == 0).count() };
    let (sequence, _) = element(der, 0x30)?;
    let (n, rest) = element(sequence, 0x02)?;
    let (e, _) = element(rest, 0x02)?;
    Some((&n[strip(n)..], &e[strip(e)..]))
}

/// Tells key sets apart: a JWT cached under one generation is re-signed under the next.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The configured keys: the one that signs, and every one published.
pub struct KeySet {
    keys: Vec<SigningKey>,
    signing: usize,
    generation: u64,
    jwks: String,
    pub(super) rng: SystemRandom,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("keys", &self.keys)
            .field("signing", &self.keys[self.signing].kid)
            .field("generation", &self.generation)
            .finish()
    }
}

impl KeySet {
    /// The set of `keys` (at least one, `kid`s unique); `signing_kid` signs, by default the
    /// last key listed (the newest).
    pub fn new(keys: Vec<SigningKey>, signing_kid: Option<&str>) -> Result<KeySet, String> {
        if keys.is_empty() {
            return Err("at least one key is needed".into());
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(format!("kid `{}` is used twice", k.kid));
            }
        }
        let signing = match signing_kid {
            Some(kid) => keys.iter().position(|k| k.kid == kid).ok_or_else(|| {
                let known: Vec<&str> = keys.iter().map(|k| k.kid.as_str()).collect();
                format!("signing_kid `{kid}` is none of the keys ({})", known.join(", "))
            })?,
            None => keys.len() - 1,
        };
        let jwks = json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()}).to_string();
        Ok(KeySet {
            keys,
            signing,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
            jwks,
            rng: SystemRandom::new(),
        })
    }

    /// The key that signs.
    pub fn signing_key(&self) -> &SigningKey {
        &self.keys[self.signing]
    }

    /// Every key, as configured.
    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// This set's generation: different for every load of the keys (start, each reload).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The JWK Set document (RFC 7517 §5) with every key's public half.
    pub fn jwks_json(&self) -> &str {
        &self.jwks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const RSA_PKCS8: &str = include_str!("testdata/rsa2048.pem");

    fn ec_pem() -> String {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        pem("PRIVATE KEY", pkcs8.as_ref())
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", lines.join("\n"))
    }

    #[test]
    fn each_algorithm_loads_and_publishes_its_public_key() {
        let ec = SigningKey::from_pem(Algorithm::ES256, Some("ec-1"), ec_pem().as_bytes()).unwrap();
        assert_eq!((ec.jwk()["kty"].as_str(), ec.jwk()["kid"].as_str()), (Some("EC"), Some("ec-1")));
        let ed_pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let ed =
            SigningKey::from_pem(Algorithm::EdDSA, None, pem("PRIVATE KEY", ed_pkcs8.as_ref()).as_bytes()).unwrap();
        assert_eq!(ed.jwk()["crv"], "Ed25519");
        assert_eq!(ed.kid().len(), 43, "RFC 7638 thumbprint as kid");
        let rsa = SigningKey::from_pem(Algorithm::PS256, Some("rsa"), RSA_PKCS8.as_bytes()).unwrap();
        assert_eq!(rsa.jwk()["e"], "AQAB");
        assert_eq!(URL_SAFE_NO_PAD.decode(rsa.jwk()["n"].as_str().unwrap()).unwrap().len(), 256);
    }

    #[test]
    fn a_key_of_another_algorithm_or_format_is_refused_clearly() {
        let e = SigningKey::from_pem(Algorithm::PS256, None, ec_pem().as_bytes()).unwrap_err();
        assert!(e.contains("PS256"), "{e}");
        let e = SigningKey::from_pem(
            Algorithm::ES256,
            None,
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(e.contains("PKCS#8"), "{e}");
        assert!(SigningKey::from_pem(Algorithm::ES256, None, b"nothing").is_err());
    }

    #[test]
    fn the_newest_key_signs_unless_one_is_named_and_kids_are_unique() {
        let a = SigningKey::from_pem(Algorithm::ES256, Some("a"), ec_pem().as_bytes()).unwrap();
        let b = SigningKey::from_pem(Algorithm::ES256, Some("b"), ec_pem().as_bytes()).unwrap();
        let set = KeySet::new(vec![a, b], None).unwrap();
        assert_eq!(set.signing_key().kid(), "b");
        let jwks: Value = serde_json::from_str(set.jwks_json()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert!(jwks["keys"][0].get("d").is_none(), "no private member published");
        let a = SigningKey::from_pem(Algorithm::ES256, Some("a"), ec_pem().as_bytes()).unwrap();
        let b = SigningKey::from_pem(Algorithm::ES256, Some("b"), ec_pem().as_bytes()).unwrap();
        let named = KeySet::new(vec![a, b], Some("a")).unwrap();
        assert_eq!(named.signing_key().kid(), "a");
        assert!(named.generation() != set.generation());
        let a = SigningKey::from_pem(Algorithm::ES256, Some("a"), ec_pem().as_bytes()).unwrap();
        let a2 = SigningKey::from_pem(Algorithm::ES256, Some("a"), ec_pem().as_bytes()).unwrap();
        assert!(KeySet::new(vec![a, a2], None).unwrap_err().contains("twice"));
    }
}
