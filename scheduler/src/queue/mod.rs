//! One model's scheduler: admission, ordering, batching and the latency
//! model, driven by the caller's clock.
//!
//! The caller submits jobs, polls for batches whenever something changed
//! (a job arrived, a batch finished, the returned wake-up time came) and
//! reports each batch's measured time. Nothing here sleeps or spawns.

mod batch;
mod fxhash;
mod order;
mod predict;
mod step;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use self::fxhash::FxHashMap;
use self::order::{Key, Order, Place};
use crate::{
    Class, Decision, DropReason, Dropped, Job, JobId, LatencyModel, Policy, Queued, RejectReason, Rejected,
    SchedulerConfig,
};

/// What the caller should do next.
#[derive(Debug)]
pub enum Action<P> {
    /// Run this batch now, then poll again.
    Dispatch(crate::Batch<P>),
    /// Nothing to run before this instant unless a job arrives or a batch ends.
    WaitUntil(Instant),
    /// Nothing to do until a job arrives or a batch ends.
    Idle,
}

/// The outcome of one poll: jobs dropped on the way, then the action.
#[derive(Debug)]
pub struct Step<P> {
    pub dropped: Vec<Dropped<P>>,
    pub action: Action<P>,
}

/// Room in the running set at one decoding step (continuous batching:
/// [`ModelScheduler::admit_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepBudget {
    /// Sequences that may join.
    pub slots: usize,
    /// Cost (tokens: prompt plus expected output) the KV cache can still hold.
    pub tokens: f64,
}

/// Jobs that join the running set at this step, and jobs dropped on the way.
#[derive(Debug)]
pub struct StepAdmission<P> {
    pub admitted: Vec<(Job<P>, Decision)>,
    pub dropped: Vec<Dropped<P>>,
}

/// A job accepted into the queue.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Admitted {
    /// Jobs ahead of it (an estimate under fair sharing).
    pub position: usize,
    /// When its deadline event (completion, or first token) is predicted.
    pub predicted: Option<Instant>,
}

/// What a batch measured, reported back through [`ModelScheduler::complete`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Time the batch kept its worker busy.
    pub elapsed: Duration,
    /// Time to the first result (first token), when it differs.
    pub first: Option<Duration>,
    /// The batch's actual cost, when usage corrected the estimate.
    pub cost: Option<f64>,
}

/// Counters over the scheduler's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub submitted: u64,
    pub admitted: u64,
    pub rejected: HashMap<RejectReason, u64>,
    pub dropped: HashMap<DropReason, u64>,
    pub dispatched: u64,
    pub batches: u64,
}

#[derive(Debug)]
struct Slot<P> {
    job: Job<P>,
    key: Key,
    place: Place,
    /// Seconds of worker time this job is expected to take, amortised over a batch.
    estimate: f64,
    position: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    jobs: usize,
    bytes: usize,
}

#[derive(Debug, Clone, Copy)]
struct RunningBatch {
    predicted_end: Instant,
    cost: f64,
    first_cost: f64,
    items: usize,
}

/// The scheduler of one model.
#[derive(Debug)]
pub struct ModelScheduler<P> {
    cfg: SchedulerConfig,
    epoch: Instant,
    slots: FxHashMap<JobId, Slot<P>>,
    order: Order,
    /// When each queued job with a deadline must leave the queue: its
    /// deadline, or under the deadline policy the last moment it could still
    /// start alone and finish in time (so it is shed as infeasible, a 503,
    /// rather than left to expire, a 504).
    expiry: BinaryHeap<Reverse<(Instant, JobId)>>,
    usage: FxHashMap<Arc<str>, Usage>,
    total: Usage,
    /// Summed service estimates of queued jobs, in seconds.
    work: f64,
    /// Summed first cost of queued jobs.
    first_work: f64,
    running: FxHashMap<u64, RunningBatch>,
    occupancy: LatencyModel,
    first: LatencyModel,
    next_batch: u64,
    seq: u64,
    counters: Counters,
}

impl<P: Queued> ModelScheduler<P> {
    /// An empty scheduler; `now` anchors its internal clock.
    pub fn new(mut cfg: SchedulerConfig, now: Instant) -> Self {
        cfg.max_batch = cfg.max_batch.max(1);
        cfg.concurrency = cfg.concurrency.max(1);
        let order = match cfg.policy {
            Policy::Deadline => Order::fair(cfg.fair_quantum.as_secs_f64()),
            Policy::Fifo | Policy::Priority => Order::global(),
        };
        ModelScheduler {
            occupancy: LatencyModel::new(cfg.latency, cfg.max_batch),
            first: LatencyModel::new(cfg.latency, cfg.max_batch),
            cfg,
            epoch: now,
            slots: FxHashMap::default(),
            order,
            expiry: BinaryHeap::new(),
            usage: FxHashMap::default(),
            total: Usage::default(),
            work: 0.0,
            first_work: 0.0,
            running: FxHashMap::default(),
            next_batch: 0,
            seq: 0,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// Change how many batches may run at once (a remote model's replicas
    /// come and go); running batches are not affected.
    pub fn set_concurrency(&mut self, concurrency: usize) {
        self.cfg.concurrency = concurrency.max(1);
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Batches running now.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Jobs in the batches running now.
    pub fn running_jobs(&self) -> usize {
        self.running.values().map(|r| r.items).sum()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The model of how long a batch keeps a worker busy.
    pub fn latency(&self) -> &LatencyModel {
        &self.occupancy
    }

    /// The model of the time to a batch's deadline event (first token).
    pub fn first_latency(&self) -> &LatencyModel {
        &self.first
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Worker seconds a job adds to the backlog: its own share plus the
    /// batch's fixed cost spread over a full batch.
    fn estimate(&self, cost: f64) -> f64 {
        let (a, b, c) = self.occupancy.coefficients();
        a / self.cfg.max_batch as f64 + b * cost + c
    }

    /// When a worker is (predicted to be) free.
    fn worker_free_at(&self, now: Instant) -> Instant {
        if self.running.len() < self.cfg.concurrency {
            return now;
        }
        self.running.values().map(|r| r.predicted_end.max(now)).min().unwrap_or(now)
    }

    /// Admit or refuse a job.
    pub fn submit(&mut self, job: Job<P>, now: Instant) -> Result<Admitted, Box<Rejected<P>>> {
        self.counters.submitted += 1;
        if job.expired(now) {
            return Err(self.reject(job, RejectReason::DeadlineExceeded, None, false));
        }
        let limits = self.cfg.limits;
        if self.total.jobs >= limits.max_jobs || self.total.bytes + job.bytes > limits.max_bytes {
            let drain = self.backlog_secs() / self.cfg.concurrency as f64;
            return Err(self.reject(job, RejectReason::QueueFull, Some(secs(drain)), true));
        }
        let tenant = self.usage.get(&job.tenant).copied().unwrap_or_default();
        if tenant.jobs >= limits.tenant_max_jobs || tenant.bytes + job.bytes > limits.tenant_max_bytes {
            let drain = self.backlog_secs() / self.cfg.concurrency as f64;
            return Err(self.reject(job, RejectReason::TenantQueueFull, Some(secs(drain)), true));
        }

        let estimate = self.estimate(job.cost);
        let alone = self.first.predict(job.first_cost, 1);
        let tier = u8::from(self.cfg.policy == Policy::Deadline && job.deadline.is_none());
        let place = self.order.place(&job.tenant, job.class.weight(), tier);
        let (position, predicted) = self.predict(&job, place, estimate, now);
        if let (Policy::Deadline, Some(deadline), Some(at)) = (self.cfg.policy, job.deadline, predicted) {
            if at > deadline {
                let retryable = now + alone <= deadline;
                return Err(self.reject(
                    job,
                    RejectReason::DeadlineInfeasible,
                    Some(at - deadline),
                    retryable,
                ));
            }
        }
        let due = match (self.cfg.policy, job.deadline) {
            (Policy::Fifo, _) => 0,
            (Policy::Priority, _) => 0,
            (Policy::Deadline, Some(deadline)) => {
                // Weighted slack: an interactive job's slack counts four times
                // a batch job's, anchored at arrival so the key never changes.
                let slack = deadline.saturating_duration_since(now + alone).as_secs_f64();
                self.nanos(now).saturating_add((slack / job.class.weight() * 1e9) as u64)
            }
            (Policy::Deadline, None) => self.nanos(now + self.cfg.best_effort_horizon),
        };
        let level = if self.cfg.policy == Policy::Priority { class_level(job.class) } else { tier };
        let key = Key { tier: level, due, seq: self.seq };
        self.seq += 1;

        if let Some(at) = self.leaves_at(&job) {
            self.expiry.push(Reverse((at, job.id)));
        }
        let usage = self.usage.entry(job.tenant.clone()).or_default();
        usage.jobs += 1;
        usage.bytes += job.bytes;
        self.total.jobs += 1;
        self.total.bytes += job.bytes;
        self.work += estimate;
        self.first_work += job.first_cost;
        let at = self.nanos(now) as f64 * 1e-9;
        if let (Order::Fair(fair), Place::Bucket(b)) = (&mut self.order, place) {
            fair.buckets[b].jobs += 1;
            fair.buckets[b].work += estimate;
            fair.buckets[b].arrived(estimate, at);
        }
        self.order.push(place, key, job.id);
        self.counters.admitted += 1;
        self.slots.insert(job.id, Slot { job, key, place, estimate, position });
        Ok(Admitted { position, predicted })
    }

    /// Summed service estimate of everything queued, in seconds.
    fn backlog_secs(&self) -> f64 {
        self.work.max(0.0)
    }

    fn reject(
        &mut self,
        job: Job<P>,
        reason: RejectReason,
        retry_after: Option<Duration>,
        retryable: bool,
    ) -> Box<Rejected<P>> {
        *self.counters.rejected.entry(reason).or_default() += 1;
        Box::new(Rejected { job, reason, retry_after, retryable })
    }

    /// Remove a queued job for good, fixing every account it was part of.
    fn remove(&mut self, id: JobId) -> Option<Slot<P>> {
        let slot = self.slots.remove(&id)?;
        if let Some(usage) = self.usage.get_mut(&slot.job.tenant) {
            usage.jobs = usage.jobs.saturating_sub(1);
            usage.bytes = usage.bytes.saturating_sub(slot.job.bytes);
            if usage.jobs == 0 {
                self.usage.remove(&slot.job.tenant);
            }
        }
        self.total.jobs = self.total.jobs.saturating_sub(1);
        self.total.bytes = self.total.bytes.saturating_sub(slot.job.bytes);
        self.work = if self.slots.is_empty() { 0.0 } else { self.work - slot.estimate };
        self.first_work = if self.slots.is_empty() { 0.0 } else { self.first_work - slot.job.first_cost };
        if let (Order::Fair(fair), Place::Bucket(b)) = (&mut self.order, slot.place) {
            fair.forget(b, slot.estimate);
        }
        Some(slot)
    }

    fn drop_job(&mut self, id: JobId, reason: DropReason, now: Instant, out: &mut Vec<Dropped<P>>) {
        if let Some(slot) = self.remove(id) {
            *self.counters.dropped.entry(reason).or_default() += 1;
            let queue_wait = slot.job.waited(now);
            out.push(Dropped { job: slot.job, reason, queue_wait });
        }
    }

    /// The moment a queued job must leave the queue (see `expiry`).
    fn leaves_at(&self, job: &Job<P>) -> Option<Instant> {
        let deadline = job.deadline?;
        if self.cfg.policy != Policy::Deadline {
            return Some(deadline);
        }
        let alone = self.first.predict(job.first_cost, 1);
        Some(deadline.checked_sub(alone).unwrap_or(deadline))
    }

    /// Drop every job whose deadline has passed (expired) or, under the
    /// deadline policy, that could no longer finish by it even if it started
    /// now (infeasible). The latency model may have learnt since a job was
    /// keyed: one that turns out feasible after all is keyed again.
    fn sweep_expired(&mut self, now: Instant, out: &mut Vec<Dropped<P>>) {
        while let Some(Reverse((at, id))) = self.expiry.peek().copied() {
            if at > now {
                break;
            }
            self.expiry.pop();
            let Some(job) = self.slots.get(&id).map(|s| &s.job) else { continue };
            if job.expired(now) {
                self.drop_job(id, DropReason::Expired, now, out);
                continue;
            }
            match self.leaves_at(job) {
                Some(later) if later > now => self.expiry.push(Reverse((later, id))),
                _ => self.drop_job(id, DropReason::Infeasible, now, out),
            }
        }
    }

    /// The earliest moment a queued job must leave, for the caller's timer.
    fn next_expiry(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.expiry.peek().copied() {
            if self.slots.contains_key(&id) {
                return Some(deadline);
            }
            self.expiry.pop();
        }
        None
    }

    /// The expiry heap deletes lazily, so dispatched jobs leave entries behind
    /// until their deadline passes: rebuild it from the queued jobs once stale
    /// entries outnumber live ones, keeping memory and pops proportional to
    /// the queue (amortised O(1) per job).
    fn compact_expiry(&mut self) {
        if self.expiry.len() > 2 * self.slots.len() + 64 {
            self.expiry = self
                .slots
                .values()
                .filter_map(|s| self.leaves_at(&s.job).map(|at| Reverse((at, s.job.id))))
                .collect();
        }
    }

    /// A batch finished: free its worker and learn from its timing.
    pub fn complete(&mut self, batch_id: u64, measured: Measured) {
        if let Some(run) = self.running.remove(&batch_id) {
            let cost = measured.cost.unwrap_or(run.cost);
            self.occupancy.observe(cost, run.items, measured.elapsed);
            self.first.observe(run.first_cost, run.items, measured.first.unwrap_or(measured.elapsed));
        }
    }

    /// A batch ended without a measurement worth learning from (its only
    /// client left part-way): free its worker, leave the latency model as is.
    pub fn release(&mut self, batch_id: u64) {
        self.running.remove(&batch_id);
    }
}

/// Priority levels: interactive first.
fn class_level(class: Class) -> u8 {
    match class {
        Class::Interactive => 0,
        Class::Standard => 1,
        Class::Batch => 2,
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 1e9))
}

#[cfg(test)]
mod tests;
