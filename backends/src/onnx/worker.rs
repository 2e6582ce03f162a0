//! What each pipeline's worker thread implements.

use std::time::Instant;

use crate::{BackendError, Item, StepReport};

/// What each worker thread runs a batch with.
pub(crate) trait Worker: Send + 'static {
    /// Run the items as one batch; every item gets exactly one terminal event.
    fn run(&mut self, items: Vec<Item>);

    /// One step of continuous batching (generative pipelines): `join` enters
    /// the running set, then every running sequence advances a token. Others
    /// run `join` as a whole batch.
    fn step(&mut self, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        let sequences = join.len();
        self.run(join);
        let elapsed = start.elapsed();
        StepReport { running: 0, reserved: 0, tokens: 0, sequences, elapsed, prefill: elapsed }
    }
}

/// Why a pipeline's run failed; its items get it as
/// [`BackendError::Failed`] with the same text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InferError {
    /// ONNX Runtime failed (building an input, running, reading an output).
    #[error(transparent)]
    Ort(#[from] ort::Error),
    /// The model's outputs, or the worker's own state, are not what the
    /// pipeline expects.
    #[error("{0}")]
    Unexpected(String),
    /// Every item of the run stopped (client gone, deadline passed).
    #[error("cancelled")]
    Stopped,
}

impl From<InferError> for BackendError {
    fn from(error: InferError) -> Self {
        match error {
            InferError::Stopped => BackendError::Cancelled,
            error => BackendError::Failed(error.to_string()),
        }
    }
}

/// A run failed: every item of the batch gets the error.
pub(crate) fn fail_all(items: &[Item], error: &InferError) {
    for item in items {
        item.fail(match error {
            InferError::Stopped => BackendError::Cancelled,
            error => BackendError::Failed(error.to_string()),
        });
    }
}
