//! Server TLS: load the certificate and key named in the configuration, or (first run) create a
//! local CA and a certificate for localhost signed by it. TLS 1.2 and 1.3 only, ring provider.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::TlsSection;

/// The acceptor configuration and the SHA-256 fingerprint of the leaf certificate. The
/// certificate is `current`'s: a reload swaps it, and new handshakes get the new one while
/// established connections keep theirs.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    pub fingerprint: String,
    pub current: Arc<CurrentCert>,
}

/// The certificate and key new handshakes get, swapped by a reload.
#[derive(Debug)]
pub struct CurrentCert(RwLock<(Arc<CertifiedKey>, String)>);

impl CurrentCert {
    /// Makes `key` (with its fingerprint) the certificate of every handshake from now on.
    pub fn replace(&self, key: Arc<CertifiedKey>, fingerprint: String) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (key, fingerprint);
    }

    pub fn fingerprint(&self) -> String {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone())
    }
}

pub fn load_or_create(tls: &TlsSection) -> anyhow::Result<ServerTls> {
    if !tls.cert.exists() || !tls.key.exists() {
        if !tls.generate_self_signed {
            return Err(anyhow!(
                "{} or {} is missing (and tls.generate_self_signed is false)",
                tls.cert.display(),
                tls.key.display()
            ));
        }
        generate(&tls.cert, &tls.key)?;
    }
    let (key, fingerprint) = load(tls)?;
    let current = Arc::new(CurrentCert(RwLock::new((key, fingerprint.clone()))));
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(current.clone());
    Ok(ServerTls { config: Arc::new(config), fingerprint, current })
}

/// Reads the certificate chain and key named in `tls` (they must exist), checks that they belong
/// together, and returns them with the leaf certificate's fingerprint.
pub fn load(tls: &TlsSection) -> anyhow::Result<(Arc<CertifiedKey>, String)> {
    let certs: Vec<CertificateDer<'static>> =
        rustls_pemfile::certs(&mut &std::fs::read(&tls.cert).with_context(|| tls.cert.display().to_string())?[..])
            .collect::<Result<_, _>>()
            .with_context(|| format!("{}: not a PEM certificate", tls.cert.display()))?;
    let leaf = certs.first().ok_or_else(|| anyhow!("{}: no certificate", tls.cert.display()))?;
    let fingerprint = chatd_proto::fingerprint_hex(leaf);
    let key: PrivateKeyDer<'static> =
        rustls_pemfile::private_key(&mut &std::fs::read(&tls.key).with_context(|| tls.key.display().to_string())?[..])
            .with_context(|| format!("{}: not a PEM key", tls.key.display()))?
            .ok_or_else(|| anyhow!("{}: no private key", tls.key.display()))?;
    let key = CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())
        .context("certificate and key do not match")?;
    Ok((Arc::new(key), fingerprint))
}

/// Writes `ca.pem` (beside the certificate), the certificate and its key (0600). The CA's key only
/// lives in memory here, so nothing else can ever be signed by it.
fn generate(cert_path: &Path, key_path: &Path) -> anyhow::Result<()> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.distinguished_name.push(DnType::CommonName, "chatd local CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()])?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;

    let dir = cert_path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() {
        std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)?;
    }
    write_file(key_path, &key.serialize_pem(), 0o600)?;
    write_file(cert_path, &cert.pem(), 0o644)?;
    write_file(&dir.join("ca.pem"), &ca_cert.pem(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), "created a self-signed certificate for localhost");
    Ok(())
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| path.display().to_string())?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}
