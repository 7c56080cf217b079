//! Test certificates made with rcgen: a CA and a server certificate for 127.0.0.1/localhost, and a token-signing key.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files for a registry serving HTTPS: `ca` is what a client must trust (`--ca-cert`).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate (PEM) that signed `certificate`.
    pub ca: PathBuf,
    /// The server certificate (PEM), for `127.0.0.1`, `::1` and `localhost`.
    pub certificate: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key: PathBuf,
}

/// Writes `ca.pem`, `server.pem` and `server-key.pem` into `dir`: a fresh CA valid for a day
/// and a server certificate it signed.
pub fn write_server_certificates(dir: &Path) -> Result<TlsFiles> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "ferry-testkit test CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca_params);
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut params = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry-testkit registry");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    set_validity(&mut params);
    let cert = params.signed_by(&server_key, &issuer)?;

    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        certificate: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    fs::write(&files.ca, ca_cert.pem())?;
    fs::write(&files.certificate, cert.pem())?;
    fs::write(&files.key, server_key.serialize_pem())?;
    Ok(files)
}

/// A self-signed ECDSA P-256 certificate and its key, for signing registry tokens (ES256).
pub struct SigningCert {
    /// The certificate, DER (goes into the token's `x5c` header).
    pub der: Vec<u8>,
    /// The certificate, PEM (the registry's `rootcertbundle`).
    pub pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
}

/// Makes the token issuer's signing certificate.
pub fn signing_certificate() -> Result<SigningCert> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, "ferry-testkit token issuer");
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params);
    let cert = params.self_signed(&key)?;
    Ok(SigningCert {
        der: cert.der().to_vec(),
        pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn set_validity(params: &mut CertificateParams) {
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(24 * 3600)).into();
}
