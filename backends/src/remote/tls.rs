//! The TLS a remote backend speaks to `https` upstreams: Mozilla's root set
//! plus the authorities in `ca_file` (a private CA), and, with
//! `client_cert` and `client_key`, a client certificate for upstreams that
//! ask for one (mutual TLS). rustls on ring. The files are read once, when
//! the backend starts; a missing or broken one stops it, naming the key.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::config::RemoteConfig;
use crate::LoadError;

/// The client config for this backend's `https` endpoints.
pub(crate) fn client_config(config: &RemoteConfig) -> Result<ClientConfig, LoadError> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &config.ca_file {
        for cert in certificates("ca_file", path)? {
            roots.add(cert).map_err(|e| LoadError::setting("ca_file", format!("{}: {e}", path.display())))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(LoadError::Tls)?
        .with_root_certificates(roots);
    match (&config.client_cert, &config.client_key) {
        (Some(cert), Some(key)) => {
            let chain = certificates("client_cert", cert)?;
            let key_bytes = read("client_key", key)?;
            let key_der = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                LoadError::setting("client_key", format!("{}: no PEM private key ({e})", key.display()))
            })?;
            builder.with_client_auth_cert(chain, key_der).map_err(|e| {
                LoadError::setting("client_key", format!("{} does not fit client_cert: {e}", key.display()))
            })
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(LoadError::Settings("client_cert and client_key go together")),
    }
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|e| LoadError::setting(field, format!("cannot read {}: {e}", path.display())))
}

/// Every certificate in a PEM file; at least one.
fn certificates(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, LoadError> {
    let bytes = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| LoadError::setting(field, format!("{}: bad PEM ({e})", path.display())))?;
    if certs.is_empty() {
        return Err(LoadError::setting(field, format!("{}: no PEM certificate", path.display())));
    }
    Ok(certs)
}
