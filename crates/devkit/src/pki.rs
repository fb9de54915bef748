//! A development PKI: one CA that signs the gateway's and the mock authorization server's
//! server certificate and two TPP client certificates. For demos and tests only.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// The files `generate` writes, by role.
#[derive(Debug, Clone)]
pub struct DevPki {
    pub dir: PathBuf,
}

impl DevPki {
    pub fn at(dir: &Path) -> DevPki {
        DevPki { dir: dir.to_path_buf() }
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("gateway.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("gateway.key")
    }
    pub fn tpp_cert(&self) -> PathBuf {
        self.dir.join("tpp.pem")
    }
    pub fn tpp_key(&self) -> PathBuf {
        self.dir.join("tpp.key")
    }
    pub fn other_tpp_cert(&self) -> PathBuf {
        self.dir.join("other-tpp.pem")
    }
    pub fn other_tpp_key(&self) -> PathBuf {
        self.dir.join("other-tpp.key")
    }
    /// The gateway's own client certificate, for `tls_client_auth` at the authorization server.
    pub fn gateway_client_cert(&self) -> PathBuf {
        self.dir.join("gateway-client.pem")
    }
    pub fn gateway_client_key(&self) -> PathBuf {
        self.dir.join("gateway-client.key")
    }
    /// A CRL from the dev CA revoking `other-tpp.pem`.
    pub fn other_tpp_revoked_crl(&self) -> PathBuf {
        self.dir.join("other-tpp-revoked.crl.pem")
    }

    /// The admin listener's bearer secret (random, written with the PKI).
    pub fn admin_secret(&self) -> PathBuf {
        self.dir.join("admin-secret")
    }
    /// The gateway's client secret at the mock authorization server (random, written with the PKI).
    pub fn introspection_secret(&self) -> PathBuf {
        self.dir.join("introspection-secret")
    }

    /// The key the gateway signs grant JWTs with (ES256, PKCS#8; `[grant_jwt]`).
    pub fn grant_jwt_key(&self) -> PathBuf {
        self.dir.join("grant-jwt.key")
    }

    /// Whether every file is already there.
    pub fn is_complete(&self) -> bool {
        [
            self.ca(),
            self.server_cert(),
            self.server_key(),
            self.tpp_cert(),
            self.tpp_key(),
            self.other_tpp_cert(),
            self.other_tpp_key(),
            self.gateway_client_cert(),
            self.gateway_client_key(),
            self.admin_secret(),
            self.introspection_secret(),
            self.grant_jwt_key(),
        ]
        .iter()
        .all(|p| p.is_file())
    }

    /// Writes a fresh PKI into the folder, replacing what is there.
    pub fn generate(&self) -> Result<(), String> {
        fs::create_dir_all(&self.dir).map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let err = |e: rcgen::Error| format!("certificate generation failed: {e}");

        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca = params("fapi-gateway development CA", "fapi-gateway dev", &[])?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(err)?;
        self.write("ca.pem", &ca_cert.pem())?;
        self.write_key("ca.key", &ca_key)?;

        // Also the docker compose service names, so the same PKI serves both demos.
        let mut server = params(
            "localhost",
            "fapi-gateway dev",
            &["localhost", "127.0.0.1", "gateway", "authorization-server", "oidc-provider"],
        )?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf("gateway", server, &ca_cert, &ca_key)?;

        let mut other_tpp_serial = None;
        for (name, cn) in [("tpp", "Financroo"), ("other-tpp", "Other TPP"), ("gateway-client", "fapi-gateway")] {
            let mut client = params(cn, cn, &[])?;
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let serial = SerialNumber::from_slice(&rand::random::<[u8; 16]>());
            client.serial_number = Some(serial.clone());
            if name == "other-tpp" {
                other_tpp_serial = Some(serial);
            }
            self.leaf(name, client, &ca_cert, &ca_key)?;
        }
        // A CRL that revokes the second TPP's certificate, for trying `listener.crls`.
        let now = OffsetDateTime::now_utc();
        let crl = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(30),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: other_tpp_serial.expect("generated above"),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca_cert, &ca_key)
        .map_err(err)?;
        self.write("other-tpp-revoked.crl.pem", &crl.pem().map_err(err)?)?;
        // The grant JWT signing key (P-256, PKCS#8).
        self.write_key("grant-jwt.key", &KeyPair::generate().map_err(err)?)?;
        // Secrets of this installation alone: nobody else's demo has the same ones.
        for name in ["admin-secret", "introspection-secret"] {
            let secret: String = rand::random::<[u8; 24]>().iter().map(|b| format!("{b:02x}")).collect();
            self.write_secret(name, &format!("{secret}\n"))?;
        }
        Ok(())
    }

    /// Mints a server certificate signed by this PKI's CA for `names` (DNS names or IP
    /// addresses), written as `NAME.pem` and `NAME.key` (e.g. a bank backend that the
    /// gateway reaches over TLS). Returns (certificate, key).
    pub fn mint_server_certificate(&self, name: &str, names: &[&str]) -> Result<(PathBuf, PathBuf), String> {
        let (ca_cert, ca_key) = self.signing_ca()?;
        let mut server = params(names.first().copied().unwrap_or(name), "fapi-gateway dev", names)?;
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.leaf(name, server, &ca_cert, &ca_key)?;
        Ok((self.dir.join(format!("{name}.pem")), self.dir.join(format!("{name}.key"))))
    }

    /// The CA as a signer: its key from `ca.key`, its name as `generate` wrote it (a leaf
    /// names its issuer by name and key, which are the same).
    fn signing_ca(&self) -> Result<(Certificate, KeyPair), String> {
        let path = self.dir.join("ca.key");
        let pem = fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let ca_key = KeyPair::from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut ca = params("fapi-gateway development CA", "fapi-gateway dev", &[])?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_cert = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
        Ok((ca_cert, ca_key))
    }

    fn leaf(&self, name: &str, mut p: CertificateParams, ca: &Certificate, ca_key: &KeyPair) -> Result<(), String> {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let cert = p.signed_by(&key, ca, ca_key).map_err(|e| e.to_string())?;
        self.write(&format!("{name}.pem"), &cert.pem())?;
        self.write_key(&format!("{name}.key"), &key)
    }

    fn write(&self, name: &str, contents: &str) -> Result<(), String> {
        let path = self.dir.join(name);
        fs::write(&path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    fn write_key(&self, name: &str, key: &KeyPair) -> Result<(), String> {
        self.write_secret(name, &key.serialize_pem())
    }

    /// Writes a file only its owner may read.
    fn write_secret(&self, name: &str, contents: &str) -> Result<(), String> {
        self.write(name, contents)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = self.dir.join(name);
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                .map_err(|e| format!("cannot restrict {}: {e}", path.display()))?;
        }
        Ok(())
    }
}

fn params(cn: &str, org: &str, names: &[&str]) -> Result<CertificateParams, String> {
    let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .map_err(|e| format!("bad certificate name: {e}"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, org);
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(825);
    Ok(p)
}
