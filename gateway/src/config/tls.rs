//! `server.tls = { cert, key, client_ca }`: the listener's certificate and,
//! for mutual TLS, the authority client certificates must be signed by.
//! Reading and checking the files lives here so that `check-config` and
//! start-up refuse a missing, unreadable or mismatched file by its key
//! path; the listener (`tls.rs`) reads them again when they change.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use serde::Deserialize;

use super::error::ConfigError;

/// `tls = { cert = "server.pem", key = "server.key", client_ca = "ca.pem" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the first certificate.
    pub key: PathBuf,
    /// PEM certificates of the authorities that sign client certificates:
    /// when set, a client without such a certificate fails the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// What the files hold, parsed and checked.
pub struct TlsFiles {
    /// The chain with its key, which matches the first certificate.
    pub certified: Arc<CertifiedKey>,
    /// The client authorities, when mutual TLS is on.
    pub client_roots: Option<RootCertStore>,
}

impl TlsConfig {
    /// The files this configuration reads, for change detection.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path()), self.client_ca.as_deref()].into_iter().flatten()
    }

    /// Read and check every file; an error names the key (`server.tls.cert`)
    /// and the file.
    pub fn read(&self) -> Result<TlsFiles, ConfigError> {
        let chain = certificates("server.tls.cert", &self.cert)?;
        let key_bytes = read("server.tls.key", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
            ConfigError::new("server.tls.key", format!("{}: no PEM private key ({e})", self.key.display()))
        })?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            ConfigError::new(
                "server.tls.key",
                format!("{} does not fit server.tls.cert: {e}", self.key.display()),
            )
        })?;
        let client_roots = match &self.client_ca {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                for cert in certificates("server.tls.client_ca", path)? {
                    roots.add(cert).map_err(|e| {
                        ConfigError::new("server.tls.client_ca", format!("{}: {e}", path.display()))
                    })?;
                }
                Some(roots)
            }
        };
        Ok(TlsFiles { certified: Arc::new(certified), client_roots })
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file; at least one.
fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let bytes = read(key, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{}: bad PEM ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(key, format!("{}: no PEM certificate", path.display())));
    }
    Ok(certs)
}
