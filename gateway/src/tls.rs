//! TLS on the listener: rustls on ring, ALPN (`h2` and `http/1.1`, or only
//! `http/1.1` with `server.http2 = false`), mutual TLS when
//! `server.tls.client_ca` is set, and certificates that follow their files.
//!
//! Each handshake takes the current [`ServerConfig`]; a task checks the
//! files' modification times every [`RELOAD_EVERY`] and, when one changed,
//! reads all of them again and swaps the whole config in (so a new key, a
//! new chain or a new client authority all take effect without a restart,
//! for new connections). A file that fails to read or does not fit keeps
//! the old config, with a warning; the next change is tried again.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::WebPkiClientVerifier;
use rustls::sign::SingleCertAndKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::{ConfigError, TlsConfig, TlsFiles};

/// How often the certificate files are checked for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// The listener's TLS: the config handshakes use now; cheap to clone.
#[derive(Clone)]
pub struct Tls {
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Read the files, build the config, and start watching the files.
    /// Must run inside a tokio runtime.
    pub fn start(config: &TlsConfig, http2: bool) -> Result<Self, ConfigError> {
        let first = server_config(config.read()?, http2)?;
        let tls = Tls { current: Arc::new(RwLock::new(first)) };
        tokio::spawn(watch(config.clone(), http2, tls.clone()));
        Ok(tls)
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        TlsAcceptor::from(current.clone())
    }

    fn replace(&self, config: Arc<ServerConfig>) {
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }
}

/// The rustls config for these files: the certificate, client
/// authentication when there are client roots, and ALPN.
fn server_config(files: TlsFiles, http2: bool) -> Result<Arc<ServerConfig>, ConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("server.tls", e.to_string()))?;
    let builder = match files.client_roots {
        Some(roots) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ConfigError::new("server.tls.client_ca", e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(files.certified)));
    config.alpn_protocols =
        if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(Arc::new(config))
}

/// What a file looked like when last read: its modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamps(paths: &[PathBuf]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
        .collect()
}

/// Reload the config whenever one of its files changes.
async fn watch(config: TlsConfig, http2: bool, tls: Tls) {
    let paths: Vec<PathBuf> = config.paths().map(PathBuf::from).collect();
    let mut seen = stamps(&paths);
    let mut tick = tokio::time::interval(RELOAD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = stamps(&paths);
        if now == seen {
            continue;
        }
        // Recorded before reading: a half-written pair fails now and is
        // read again when its second file lands.
        seen = now;
        match config.read().and_then(|files| server_config(files, http2)) {
            Ok(fresh) => {
                tls.replace(fresh);
                tracing::info!("TLS certificate reloaded");
            }
            Err(error) => {
                tracing::warn!(%error, "TLS files changed but cannot be used; keeping the old certificate")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert, key) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("infergate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn alpn_follows_http2() {
        let dir = temp_dir("alpn");
        let (cert, key) = write_pair(&dir, "a");
        let config = TlsConfig { cert, key, client_ca: None };
        let h2 = server_config(config.read().unwrap(), true).unwrap();
        assert_eq!(h2.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let h1 = server_config(config.read().unwrap(), false).unwrap();
        assert_eq!(h1.alpn_protocols, [b"http/1.1".to_vec()]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_by_its_key() {
        let dir = temp_dir("mismatch");
        let (cert, _) = write_pair(&dir, "a");
        let (_, other_key) = write_pair(&dir, "b");
        let error = TlsConfig { cert, key: other_key, client_ca: None }.read().err().unwrap();
        assert_eq!(error.path, "server.tls.key");
        let missing = TlsConfig { cert: dir.join("nope.pem"), key: dir.join("a.key"), client_ca: None };
        let error = missing.read().err().unwrap();
        assert_eq!(error.path, "server.tls.cert");
        assert!(error.message.contains("nope.pem"), "{}", error.message);
        let _ = std::fs::remove_dir_all(dir);
    }
}
