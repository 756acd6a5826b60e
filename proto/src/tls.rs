//! Client-side TLS: how a client decides to trust the daemon. A CA file (chatd writes
//! `certs/ca.pem` when it makes its own certificate), a pinned SHA-256 fingerprint of the daemon's
//! certificate (as chatd prints it at start), or the system's web roots.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// How a client trusts the daemon's certificate.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The web PKI roots (a daemon with a certificate from a public CA).
    System,
    /// Certificates in a PEM file (for example chatd's `certs/ca.pem`).
    CaFile(PathBuf),
    /// Exactly the certificate with this SHA-256 fingerprint (of its DER bytes), whatever its issuer.
    Fingerprint([u8; 32]),
}

/// `AB:CD:...` (upper-case hex, colon separated), as `openssl x509 -fingerprint -sha256` prints it.
pub fn fingerprint_hex(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    digest.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// Reads a SHA-256 fingerprint written with or without colons, in either case, with an optional
/// `sha256:` / `SHA256=` prefix.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let s = ["sha256:", "SHA256:", "sha256=", "SHA256=", "sha256 Fingerprint="]
        .iter()
        .find_map(|p| s.strip_prefix(p))
        .unwrap_or(s);
    let hex_digits: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hex_digits).ok()?;
    bytes.try_into().ok()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// Builds a rustls client configuration (TLS 1.2 and 1.3, ring provider) for this trust.
pub fn client_config(trust: &Trust) -> io::Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?;
    let config = match trust {
        Trust::System => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                roots.add(cert?).map_err(io::Error::other)?;
            }
            if roots.is_empty() {
                return Err(io::Error::other(format!("{}: no certificate in file", path.display())));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::Fingerprint(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: Some(*pin),
                seen: Arc::default(),
                provider: provider(),
            }))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Opens a TCP connection to `addr` and runs the TLS handshake, checking the certificate against
/// `server_name` (ignored for a pinned fingerprint).
pub async fn connect(addr: &str, server_name: &str, config: Arc<ClientConfig>) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.to_string()).map_err(io::Error::other)?;
    TlsConnector::from(config).connect(name, tcp).await
}

/// Connects once accepting any certificate, only to learn the fingerprint of the one the daemon
/// shows (for a "trust this certificate?" prompt, as ssh does). Nothing is sent over it.
pub async fn probe_fingerprint(addr: &str, server_name: &str) -> io::Result<String> {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let verifier = PinnedVerifier { pin: None, seen: seen.clone(), provider: provider() };
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    let _ = connect(addr, server_name, Arc::new(config)).await?;
    let fp = seen.lock().unwrap().clone();
    fp.ok_or_else(|| io::Error::other("the server showed no certificate"))
}

/// Accepts exactly the pinned certificate (or, with no pin, records whatever it is shown). The
/// handshake signatures are still verified, so the peer must hold the certificate's key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: Option<[u8; 32]>,
    seen: Arc<Mutex<Option<String>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(fingerprint_hex(end_entity));
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if Sha256::digest(end_entity.as_ref())[..] == pin[..] => Ok(ServerCertVerified::assertion()),
            Some(_) => Err(rustls::Error::General(format!(
                "certificate fingerprint {} does not match the pinned one",
                fingerprint_hex(end_entity)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_forms() {
        let fp = fingerprint_hex(b"hello");
        assert_eq!(fp.len(), 32 * 3 - 1);
        let parsed = parse_fingerprint(&fp).unwrap();
        assert_eq!(parse_fingerprint(&fp.replace(':', "").to_lowercase()), Some(parsed));
        assert_eq!(parse_fingerprint(&format!("SHA256:{fp}")), Some(parsed));
        assert_eq!(parse_fingerprint("zz"), None);
    }
}
