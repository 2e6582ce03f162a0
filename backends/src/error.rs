//! What can go wrong inside a backend: a job's failure, which clients see,
//! and a backend's failure to start, which the operator sees.

use std::path::PathBuf;

/// A backend's failure for one item or a whole batch. The gateway maps each
/// variant to an HTTP status in one place. `InvalidInput`'s and `Refused`'s
/// messages are for the client; the others' texts are details for logs and
/// spans (they may name upstream replicas), never shown to clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The input was well-formed HTTP but the model cannot take it.
    #[error("{0}")]
    InvalidInput(String),
    /// An upstream refused the client's request (a 4xx other than 401, 403
    /// and 429): its status, and its message (redacted), `param` and `code`.
    #[error("{message}")]
    Refused { status: u16, message: String, param: Option<String>, code: Option<String> },
    /// An upstream refused the gateway's own credentials (401 or 403).
    #[error("upstream refused the gateway's credentials: {0}")]
    UpstreamAuth(String),
    /// Every upstream tried is rate limiting; try again after `retry_after`.
    #[error("upstream is rate limiting")]
    UpstreamBusy { retry_after: std::time::Duration },
    /// The backend failed while running the job.
    #[error("backend failed: {0}")]
    Failed(String),
    /// The backend went away in the middle of a response.
    #[error("backend disconnected: {0}")]
    Disconnected(String),
    /// The job was cancelled (the client left or the deadline passed).
    #[error("cancelled")]
    Cancelled,
}

/// Why a backend cannot start (from [`crate::BackendConfig`]'s `validate`
/// and `build`): a setting it cannot use, a model file that is missing or
/// broken, or a worker that did not come up. The text names the setting or
/// the file; a setting's starts with its key (`jitter: ...`).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A setting the backend cannot use; `field` is its key in the
    /// model's `backend` table.
    #[error("{field}: {message}")]
    Setting { field: &'static str, message: String },
    /// A rule over several settings, whose text names them.
    #[error("{0}")]
    Settings(&'static str),
    /// The model file is not there.
    #[error("model file {} not found ({hint})", path.display())]
    Missing { path: PathBuf, hint: &'static str },
    /// A file that comes with the model cannot be read.
    #[error("{}: {source} ({hint})", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error, hint: &'static str },
    /// ONNX Runtime itself cannot be loaded.
    #[error("{0}")]
    Runtime(String),
    /// A model file is broken or not what the backend expects; the text
    /// names the file.
    #[error("{0}")]
    Model(String),
    /// The TLS set-up of a remote backend's HTTP client failed.
    #[error("HTTP client: TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// A worker thread ended before it had loaded.
    #[error("a worker stopped while loading")]
    WorkerStopped,
}

impl LoadError {
    /// A [`LoadError::Setting`] for `field`.
    pub(crate) fn setting(field: &'static str, message: impl Into<String>) -> Self {
        LoadError::Setting { field, message: message.into() }
    }
}
