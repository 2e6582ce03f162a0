//! What can go wrong inside a backend.

/// A backend's failure for one item or a whole batch. The gateway maps each
/// variant to an HTTP status in one place; messages are safe to show clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The input was well-formed HTTP but the model cannot take it.
    #[error("{0}")]
    InvalidInput(String),
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
