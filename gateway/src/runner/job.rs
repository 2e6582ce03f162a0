//! What a job costs the model, and how the scheduler treated it: the
//! runner's vocabulary shared with the call layer and the response headers.

use std::time::Duration;

/// How the scheduler treated a request, for response headers and traces.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DispatchInfo {
    pub queue_wait: Duration,
    pub batch_size: usize,
    pub batch_id: u64,
    /// Predicted seconds to spare at dispatch (`None` for best effort).
    pub slack: Option<f64>,
    /// Jobs ahead at admission.
    pub position: usize,
    /// What the response cache made of the request, for a model that has one.
    pub cache: Option<crate::cache::CacheStatus>,
}

/// What a request costs the model, in its unit (before `cost_factor`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// All the work: tokens in and (expected) out, audio seconds, items.
    pub total: f64,
    /// The work before the deadline event: the prompt of a streamed generation.
    pub first: f64,
    /// Bytes held while queued.
    pub bytes: usize,
}

impl Cost {
    /// A request whose deadline is on its completion.
    pub fn whole(total: f64, bytes: usize) -> Self {
        Cost { total, first: total, bytes }
    }
}
