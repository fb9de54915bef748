//! TLS at the gateway's edge: the server certificate, mandatory client-certificate
//! verification against the configured CA bundle, and the client's identity as the rest
//! of the request sees it.
//!
//! rustls verifies the chain during the handshake (a client without a certificate, or
//! with one from another CA, never gets to send a request). After the handshake,
//! [`HandshakeCallback`] stores the leaf's RFC 8705 thumbprint in pingora's
//! `SslDigest::extension`, where [`ClientCertificate::of_session`] finds it.

use std::any::Any;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::config::{CertificateHeader, ClientCertificateSource, ListenerConfig, TlsProfile};
use crate::error::StartError;
use std::path::PathBuf;

/// The verified client certificate of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// RFC 8705 §3.1 `x5t#S256`: base64url (no padding) SHA-256 of the DER certificate.
    pub thumbprint: String,
}

impl ClientCertificate {
    /// The identity of a DER certificate: its RFC 8705 thumbprint.
    pub fn from_der(der: &[u8]) -> ClientCertificate {
        ClientCertificate { thumbprint: thumbprint(der) }
    }

    /// The certificate of the connection a request arrived on, if it was verified.
    pub fn of_session(session: &pingora_proxy::Session) -> Option<&ClientCertificate> {
        session.digest()?.ssl_digest.as_ref()?.extension.get::<ClientCertificate>()
    }
}

/// The rustls provider for a TLS profile: ring, with the FAPI profile's TLS 1.2 suites
/// limited to ECDHE with AES-GCM (FAPI 1.0 Advanced §8.5, FAPI 2.0 §5.2.2; the ECDSA
/// twins are allowed as is common). TLS 1.3 suites are all permitted.
pub fn crypto_provider(profile: TlsProfile) -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::cipher_suite as suite;
    let mut provider = rustls::crypto::ring::default_provider();
    if profile == TlsProfile::Fapi {
        provider.cipher_suites = vec![
            suite::TLS13_AES_128_GCM_SHA256,
            suite::TLS13_AES_256_GCM_SHA384,
            suite::TLS13_CHACHA20_POLY1305_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ];
    }
    provider
}

/// Installs the process-wide provider for `profile`. pingora builds its listener with
/// the process default, so the profile is fixed once per process: asking for another
/// one later is an error.
pub fn install_crypto_provider(profile: TlsProfile) -> Result<(), StartError> {
    let wanted = crypto_provider(profile);
    let _ = rustls::crypto::CryptoProvider::install_default(crypto_provider(profile));
    let name = match profile {
        TlsProfile::Fapi => "fapi",
        TlsProfile::Compatible => "compatible",
    };
    let installed = rustls::crypto::CryptoProvider::get_default().ok_or(StartError::TlsProfile(name))?;
    let names = |p: &rustls::crypto::CryptoProvider| p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>();
    if names(installed) != names(&wanted) {
        return Err(StartError::TlsProfile(name));
    }
    Ok(())
}

/// The certificate chain a trusted proxy put in a header: `Ok(None)` when absent.
pub fn certificate_from_header(
    headers: &http::HeaderMap,
    format: CertificateHeader,
) -> Result<Option<Vec<CertificateDer<'static>>>, &'static str> {
    use base64::engine::general_purpose::STANDARD;
    match format {
        CertificateHeader::Rfc9440 => {
            let Some(leaf) = headers.get("client-cert") else { return Ok(None) };
            // A structured-field byte sequence: `:base64:`.
            let binary = |item: &str| -> Result<CertificateDer<'static>, &'static str> {
                let inner =
                    item.trim().strip_prefix(':').and_then(|s| s.strip_suffix(':')).ok_or("not a byte sequence")?;
                STANDARD.decode(inner).map(CertificateDer::from).map_err(|_| "not base64")
            };
            let mut chain = vec![binary(leaf.to_str().map_err(|_| "not ASCII")?)?];
            for value in headers.get_all("client-cert-chain") {
                for item in value.to_str().map_err(|_| "not ASCII")?.split(',') {
                    chain.push(binary(item)?);
                }
            }
            Ok(Some(chain))
        }
        CertificateHeader::XSslClientCert => {
            let Some(value) = headers.get("x-ssl-client-cert") else { return Ok(None) };
            let pem = percent_encoding::percent_decode(value.as_bytes()).collect::<Vec<u8>>();
            let certs = rustls_pemfile::certs(&mut &pem[..]).collect::<Result<Vec<_>, _>>().map_err(|_| "not PEM")?;
            if certs.is_empty() {
                return Err("no certificate in the PEM");
            }
            Ok(Some(certs))
        }
    }
}

/// RFC 8705 thumbprint of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

/// Records the client's certificate once per connection, after rustls verified it.
pub struct HandshakeCallback;

#[async_trait]
impl TlsAccept for HandshakeCallback {
    async fn handshake_complete_callback(&self, tls: &TlsRef) -> Option<Arc<dyn Any + Send + Sync>> {
        let der = tls.peer_certificate_der()?;
        Some(Arc::new(ClientCertificate::from_der(der)))
    }
}

/// The server certificate, swappable without a restart.
#[derive(Debug)]
pub struct ServerCertificate {
    current: ArcSwap<CertifiedKey>,
}

impl ServerCertificate {
    /// Reads the listener's certificate chain and private key (PEM files).
    pub fn load(cert: &Path, key: &Path) -> Result<ServerCertificate, StartError> {
        Ok(ServerCertificate { current: ArcSwap::from_pointee(certified_key(cert, key)?) })
    }

    /// Reads and checks a certificate and key, for [`Self::replace`].
    pub fn prepare(cert: &Path, key: &Path) -> Result<CertifiedKey, StartError> {
        certified_key(cert, key)
    }

    /// Replaces the certificate that new handshakes present.
    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

/// The client-certificate verifier, swappable without a restart (CA bundle rotation).
///
/// It sends no CA names in the handshake (`root_hint_subjects` is empty): the names
/// would have to outlive a swap. Clients holding one certificate send it regardless.
#[derive(Debug)]
pub struct ClientVerifier {
    current: ArcSwap<Arc<dyn ClientCertVerifier>>,
}

impl ClientVerifier {
    /// A verifier requiring client certificates that chain to the CA bundle at `ca` and
    /// that none of `crls` revokes (PEM files).
    pub fn load(ca: &Path, crls: &[PathBuf]) -> Result<ClientVerifier, StartError> {
        Ok(ClientVerifier { current: ArcSwap::from_pointee(client_verifier(ca, crls)?) })
    }

    /// Verifies a certificate that arrived in a header from a trusted proxy, as a
    /// handshake would; returns its thumbprint.
    pub fn verify_presented(&self, chain: &[CertificateDer<'static>]) -> Result<ClientCertificate, String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
        self.current.load().verify_client_cert(leaf, intermediates, UnixTime::now()).map_err(|e| e.to_string())?;
        Ok(ClientCertificate::from_der(leaf))
    }

    /// Verifies with `verifier` from now on (a rotated CA bundle or CRLs): new handshakes and
    /// header-borne certificates.
    pub fn replace(&self, verifier: Arc<dyn ClientCertVerifier>) {
        self.current.store(Arc::new(verifier));
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current.load().verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current.load().supported_verify_schemes()
    }
}

impl ResolvesServerCert for ServerCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified_key(cert: &Path, key: &Path) -> Result<CertifiedKey, StartError> {
    let chain = read_certificates(cert)?;
    let key = read_private_key(key)?;
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|e| StartError::file(cert, e))
}

/// Every certificate in a PEM file; an empty or unreadable file is an error.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, StartError> {
    let file = File::open(path).map_err(|e| StartError::read(path, e))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(file))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| StartError::file(path, format!("not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(StartError::file(path, "holds no certificate"));
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, StartError> {
    let file = File::open(path).map_err(|e| StartError::read(path, e))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .map_err(|e| StartError::file(path, format!("not valid PEM: {e}")))?
        .ok_or_else(|| StartError::file(path, "holds no private key"))
}

/// A verifier that requires a client certificate chaining to the CA bundle at `path` and
/// not revoked by any of the CRLs (PEM files).
pub fn client_verifier(path: &Path, crl_files: &[PathBuf]) -> Result<Arc<dyn ClientCertVerifier>, StartError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certificates(path)? {
        roots.add(cert).map_err(|e| StartError::file(path, format!("unusable CA certificate: {e}")))?;
    }
    let mut crls = Vec::new();
    for file in crl_files {
        let f = File::open(file).map_err(|e| StartError::read(file, e))?;
        let found = rustls_pemfile::crls(&mut BufReader::new(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StartError::file(file, format!("not valid PEM: {e}")))?;
        if found.is_empty() {
            return Err(StartError::file(file, "holds no CRL"));
        }
        crls.extend(found);
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .with_crls(crls)
        .build()
        .map_err(|e| StartError::file(path, e))
}

/// The listener's TLS settings: our certificate, mandatory client certificates, h2 if enabled.
pub fn tls_settings(
    listener: &ListenerConfig,
    server_certificate: Arc<ServerCertificate>,
    client_verifier: Arc<ClientVerifier>,
) -> Result<TlsSettings, StartError> {
    let mut settings =
        TlsSettings::with_callbacks(Box::new(HandshakeCallback)).map_err(|e| StartError::Tls(e.to_string()))?;
    settings.set_cert_resolver(server_certificate);
    // Behind a proxy the certificate comes in a header; the handshake asks for none.
    if listener.client_certificates == ClientCertificateSource::Handshake {
        settings.set_client_cert_verifier(client_verifier);
    }
    if listener.http2 {
        settings.enable_h2();
    }
    Ok(settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_is_unpadded_base64url_sha256() {
        // SHA-256 of the empty input, as RFC 8705's encoding would carry it.
        assert_eq!(thumbprint(b""), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
    }
}
