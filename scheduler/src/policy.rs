//! Scheduler settings, and the three policies.

use std::str::FromStr;
use std::time::Duration;

use crate::{LatencySeed, ParseError};

/// How a model's queue orders, admits and batches jobs.
///
/// All three are honest baselines: bounded queues, expired jobs dropped
/// before they run, the same batching limits. Only `Deadline` predicts
/// finish times and orders by slack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Weighted earliest-deadline-first on slack with admission control,
    /// deficit round robin across tenants and slack-aware batching.
    #[default]
    Deadline,
    /// Arrival order.
    Fifo,
    /// Triton-like: strict priority levels by class, FIFO within a level,
    /// each request's deadline as its queue timeout.
    Priority,
}

impl Policy {
    pub const ALL: [Policy; 3] = [Policy::Deadline, Policy::Fifo, Policy::Priority];

    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Deadline => "deadline",
            Policy::Fifo => "fifo",
            Policy::Priority => "priority",
        }
    }
}

impl FromStr for Policy {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| ParseError::Policy(s.to_owned()))
    }
}

/// Bounds on what may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_jobs: usize,
    pub max_bytes: usize,
    /// Per tenant, so one tenant cannot fill the queue.
    pub tenant_max_jobs: usize,
    pub tenant_max_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_jobs: 1024,
            max_bytes: 256 << 20,
            tenant_max_jobs: 1024,
            tenant_max_bytes: 256 << 20,
        }
    }
}

/// Everything a model's scheduler is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    pub policy: Policy,
    /// Most jobs per batch (at least 1).
    pub max_batch: usize,
    /// Most summed cost per batch (`f64::INFINITY` for no limit).
    pub max_batch_cost: f64,
    /// Longest a job waits for company.
    pub max_delay: Duration,
    /// Batches that may run at once.
    pub concurrency: usize,
    pub limits: QueueLimits,
    pub latency: LatencySeed,
    /// Best-effort jobs sort as if due this long after arrival (aging).
    pub best_effort_horizon: Duration,
    /// Deficit round robin quantum, in seconds of service, per unit of class weight.
    pub fair_quantum: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            policy: Policy::Deadline,
            max_batch: 1,
            max_batch_cost: f64::INFINITY,
            max_delay: Duration::ZERO,
            concurrency: 1,
            limits: QueueLimits::default(),
            latency: LatencySeed::default(),
            best_effort_horizon: Duration::from_secs(60),
            fair_quantum: Duration::from_millis(20),
        }
    }
}
