//! How OTLP export reaches the receiver: one blocking HTTP client that the
//! span, log and metric exporters share (and with it, their connections),
//! or the tokio runtime that gRPC export runs on.
//!
//! TLS is rustls with the ring provider. reqwest's own provider, aws-lc-rs,
//! needs a C build, so reqwest comes without one (`rustls-no-provider`) and
//! panics building any client, even for `http://`, until the process has a
//! default provider: ring's is installed here unless the program installed
//! one first. Receivers are verified against the system's root
//! certificates and those of `otlp_ca_file` (a private CA); on a host that
//! has no system roots the client trusts only that file's, or none, so
//! `http://` export still works and `https://` to a public receiver fails
//! at the handshake (counted as failed exports).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::Certificate;

use crate::processors::Runner;

/// The transport of one OTLP endpoint.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// OTLP/HTTP with protobuf bodies, through this client.
    Http(Client),
    /// OTLP/gRPC, on this runtime.
    Grpc(tokio::runtime::Handle),
}

/// A transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error("OTLP/HTTP client thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("OTLP/HTTP client thread panicked")]
    Panicked,
    #[error("OTLP/HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("OTLP/gRPC export must be initialised inside a tokio runtime")]
    NoRuntime,
    #[error("telemetry.otlp_ca_file: cannot read {}: {source}", path.display())]
    CaFile { path: PathBuf, source: std::io::Error },
    #[error("telemetry.otlp_ca_file: {} holds no PEM certificate", path.display())]
    NoCertificate { path: PathBuf },
    #[error("telemetry.otlp_ca_file applies to OTLP/HTTP only, not gRPC")]
    CaOverGrpc,
}

impl Transport {
    /// OTLP/HTTP through a client whose requests time out after `timeout`,
    /// trusting the certificates in `ca_file` too.
    pub(crate) fn http(timeout: Duration, ca_file: Option<&Path>) -> Result<Self, TransportError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let extra = ca_file.map(certificates).transpose()?.unwrap_or_default();
        // On a thread of its own: a blocking client runs a runtime of its own,
        // and building one inside tokio's (where `init` may run) panics.
        let client = std::thread::Builder::new()
            .name("otlp-http-client".into())
            .spawn(move || {
                let builder = || Client::builder().timeout(timeout);
                builder().tls_certs_merge(extra.clone()).build().or_else(|error| {
                    if extra.is_empty() {
                        let why =
                            std::error::Error::source(&error).map_or(error.to_string(), ToString::to_string);
                        eprintln!("infergate: OTLP/HTTP export without TLS roots ({why}): https will fail");
                    }
                    builder().tls_certs_only(extra).build()
                })
            })?
            .join()
            .map_err(|_| TransportError::Panicked)??;
        Ok(Transport::Http(client))
    }

    /// OTLP/gRPC on the runtime this is called in.
    pub(crate) fn grpc() -> Result<Self, TransportError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| TransportError::NoRuntime)?;
        Ok(Transport::Grpc(handle))
    }

    /// Where the exporters' futures run: the blocking HTTP client on the
    /// queue's own thread, tonic on tokio.
    pub(crate) fn runner(&self) -> Runner {
        match self {
            Transport::Http(_) => Runner::Blocking,
            Transport::Grpc(handle) => Runner::Tokio(handle.clone()),
        }
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<Certificate>, TransportError> {
    let pem =
        std::fs::read(path).map_err(|source| TransportError::CaFile { path: path.to_owned(), source })?;
    let certs = Certificate::from_pem_bundle(&pem)?;
    if certs.is_empty() {
        return Err(TransportError::NoCertificate { path: path.to_owned() });
    }
    Ok(certs)
}
