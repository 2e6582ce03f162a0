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
    /// Work in the model's cost unit (tokens, megapixels, audio seconds).
    pub cost: f64,
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

/// A job that was refused at submission, handed back with the reason.
#[derive(Debug)]
pub struct Rejected<P> {
    pub job: Job<P>,
    pub reason: RejectReason,
}

/// Why a job was refused at submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The model's queue is at capacity.
    QueueFull,
    /// The deadline had already passed when the job arrived.
    DeadlineExceeded,
}

/// A job that left the queue without running.
#[derive(Debug)]
pub struct Dropped<P> {
    pub job: Job<P>,
    pub reason: DropReason,
}

/// Why a queued job was dropped before it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Its deadline passed while it waited.
    DeadlineExceeded,
    /// Its client went away.
    Cancelled,
}

/// Jobs dispatched together to one backend call.
#[derive(Debug)]
pub struct Batch<P> {
    pub id: u64,
    pub dispatched_at: Instant,
    pub jobs: Vec<Job<P>>,
}

impl<P> Batch<P> {
    /// The summed cost of every member.
    pub fn cost(&self) -> f64 {
        self.jobs.iter().map(|j| j.cost).sum()
    }
}
