//! The unit of scheduling and what can become of it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Class;

/// Identifies a job for as long as the process runs.
pub type JobId = u64;

/// What the scheduler needs to know about a payload it does not otherwise
/// understand.
pub trait Queued {
    /// True once the client has gone away: the job is dropped, not run.
    fn is_cancelled(&self) -> bool;
}

/// A request waiting to run on one model.
#[derive(Debug)]
pub struct Job<P> {
    pub id: JobId,
    pub tenant: Arc<str>,
    pub class: Class,
    pub arrival: Instant,
    /// `None` asks for best effort.
    pub deadline: Option<Instant>,
    /// Work in the model's cost unit (tokens, megapixels, audio seconds):
    /// how long the job keeps a worker busy.
    pub cost: f64,
    /// The part of `cost` done before the deadline event: the prompt for a
    /// streamed generation (whose deadline is on the first token), else all.
    pub first_cost: f64,
    /// Bytes the job holds while queued (for byte-bounded queues).
    pub bytes: usize,
    pub payload: P,
}

impl<P> Job<P> {
    /// How long the job has waited at `now`.
    pub fn waited(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.arrival)
    }

    /// True when the deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

/// Why a job was refused at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The model's queue is at capacity (jobs or bytes).
    QueueFull,
    /// The tenant's share of the queue is at capacity.
    TenantQueueFull,
    /// The predicted finish is after the deadline.
    DeadlineInfeasible,
    /// The deadline had already passed on arrival.
    DeadlineExceeded,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [
        RejectReason::QueueFull,
        RejectReason::TenantQueueFull,
        RejectReason::DeadlineInfeasible,
        RejectReason::DeadlineExceeded,
    ];

    /// The label used in metrics and error codes.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::QueueFull => "queue_full",
            RejectReason::TenantQueueFull => "tenant_queue_full",
            RejectReason::DeadlineInfeasible => "deadline_infeasible",
            RejectReason::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// A job refused at submission, handed back with the reason.
#[derive(Debug)]
pub struct Rejected<P> {
    pub job: Job<P>,
    pub reason: RejectReason,
    /// When a retry might succeed.
    pub retry_after: Option<Duration>,
    /// False when no retry can help (the job alone outlasts its deadline).
    pub retryable: bool,
}

/// Why a queued job left without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Its deadline passed while it waited.
    Expired,
    /// Its deadline is still ahead but can no longer be met.
    Infeasible,
    /// Its client went away.
    Cancelled,
}

impl DropReason {
    pub const ALL: [DropReason; 3] = [DropReason::Expired, DropReason::Infeasible, DropReason::Cancelled];

    /// The label used in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::Infeasible => "infeasible",
            DropReason::Cancelled => "cancelled",
        }
    }
}

/// A job that left the queue without running.
#[derive(Debug)]
pub struct Dropped<P> {
    pub job: Job<P>,
    pub reason: DropReason,
    pub queue_wait: Duration,
}

/// How the scheduler treated one dispatched job: for traces, metrics and
/// response headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub queue_wait: Duration,
    /// Seconds between the predicted deadline event and the deadline, at
    /// dispatch (`None` for best effort).
    pub slack: Option<f64>,
    /// Jobs that were ahead of this one when it was admitted.
    pub position: usize,
    pub batch_id: u64,
    pub batch_size: usize,
}

/// Jobs dispatched together to one backend call.
#[derive(Debug)]
pub struct Batch<P> {
    pub id: u64,
    pub dispatched_at: Instant,
    /// Predicted time until the backend finishes the batch.
    pub predicted: Duration,
    pub jobs: Vec<(Job<P>, Decision)>,
}

impl<P> Batch<P> {
    /// The summed cost of every member.
    pub fn cost(&self) -> f64 {
        self.jobs.iter().map(|(j, _)| j.cost).sum()
    }
}
