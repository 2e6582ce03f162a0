//! TLS for `https://` targets: rustls on ring, trusting Mozilla's root set
//! plus `--cacert`, or, with `--insecure`, any certificate at all (the
//! handshake's signatures are still checked, so the session is encrypted;
//! only who is at the other end goes unverified).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// How `https://` targets are trusted; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tls(Arc<ClientConfig>);

impl Default for Tls {
    /// Mozilla's root set.
    fn default() -> Self {
        Tls::new(None, false).unwrap_or_else(|_| Tls(Arc::new(insecure_config())))
    }
}

impl Tls {
    /// Trust Mozilla's roots and the certificates in `cacert`; or, when
    /// `insecure`, any server certificate.
    pub fn new(cacert: Option<&Path>, insecure: bool) -> anyhow::Result<Self> {
        if insecure {
            return Ok(Tls(Arc::new(insecure_config())));
        }
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(path) = cacert {
            let pem = std::fs::read(path).with_context(|| format!("reading --cacert {}", path.display()))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("--cacert {}: bad PEM", path.display()))?;
            anyhow::ensure!(!certs.is_empty(), "--cacert {}: no PEM certificate", path.display());
            for cert in certs {
                roots.add(cert).with_context(|| format!("--cacert {}", path.display()))?;
            }
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls(Arc::new(config)))
    }

    /// The rustls config (ALPN is set per client, by the connector).
    pub fn config(&self) -> ClientConfig {
        (*self.0).clone()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn insecure_config() -> ClientConfig {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
        // ring supports the default versions; this branch is never taken.
        .unwrap_or_else(|_| {
            ClientConfig::builder().with_root_certificates(RootCertStore::empty()).with_no_client_auth()
        })
}

/// `--insecure`: accepts every server certificate, checks the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
