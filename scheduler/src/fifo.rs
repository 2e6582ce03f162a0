//! First-in first-out batching: the simplest honest policy.
//!
//! Jobs run in arrival order. A batch is dispatched when `max_size` jobs are
//! waiting or the oldest has waited `max_delay`. The queue is bounded, and
//! jobs whose deadline passed or whose client left are dropped before they
//! run, never sent to a backend.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::job::{Batch, DropReason, Dropped, Job, Queued, RejectReason, Rejected};

/// When to close a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    /// The most jobs in one backend call (at least 1).
    pub max_size: usize,
    /// How long the oldest job may wait for company.
    pub max_delay: Duration,
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy { max_size: 1, max_delay: Duration::ZERO }
    }
}

/// What the caller should do next.
#[derive(Debug)]
pub enum Action<P> {
    /// Run this batch now.
    Dispatch(Batch<P>),
    /// Nothing to run before this instant unless new work arrives.
    WaitUntil(Instant),
    /// The queue is empty.
    Idle,
}

/// The outcome of one poll: jobs dropped on the way, then the action.
#[derive(Debug)]
pub struct Step<P> {
    pub dropped: Vec<Dropped<P>>,
    pub action: Action<P>,
}

/// A bounded FIFO queue for one model that forms batches.
#[derive(Debug)]
pub struct FifoQueue<P> {
    queue: VecDeque<Job<P>>,
    capacity: usize,
    policy: BatchPolicy,
    next_batch_id: u64,
}

impl<P: Queued> FifoQueue<P> {
    /// An empty queue holding at most `capacity` jobs.
    pub fn new(capacity: usize, policy: BatchPolicy) -> Self {
        FifoQueue {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            policy: BatchPolicy { max_size: policy.max_size.max(1), ..policy },
            next_batch_id: 0,
        }
    }

    /// Jobs waiting now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// True when no job waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Enqueue a job; returns its position (0 = next to run).
    pub fn submit(&mut self, job: Job<P>, now: Instant) -> Result<usize, Rejected<P>> {
        if job.expired(now) {
            return Err(Rejected { job, reason: RejectReason::DeadlineExceeded });
        }
        if self.queue.len() >= self.capacity {
            return Err(Rejected { job, reason: RejectReason::QueueFull });
        }
        self.queue.push_back(job);
        Ok(self.queue.len() - 1)
    }

    /// Drop dead jobs, then dispatch a batch if one is due.
    pub fn poll(&mut self, now: Instant) -> Step<P> {
        let dropped = self.drop_dead(now);
        let action = match self.queue.front() {
            None => Action::Idle,
            Some(oldest) => {
                let due = oldest.arrival + self.policy.max_delay;
                if self.queue.len() >= self.policy.max_size || due <= now {
                    let take = self.queue.len().min(self.policy.max_size);
                    let jobs: Vec<Job<P>> = self.queue.drain(..take).collect();
                    let id = self.next_batch_id;
                    self.next_batch_id += 1;
                    Action::Dispatch(Batch { id, dispatched_at: now, jobs })
                } else {
                    Action::WaitUntil(due)
                }
            }
        };
        Step { dropped, action }
    }

    /// Remove every job that must not run: expired or cancelled.
    fn drop_dead(&mut self, now: Instant) -> Vec<Dropped<P>> {
        let mut dropped = Vec::new();
        if !self.queue.iter().any(|j| j.expired(now) || j.payload.is_cancelled()) {
            return dropped;
        }
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for job in self.queue.drain(..) {
            if job.payload.is_cancelled() {
                dropped.push(Dropped { job, reason: DropReason::Cancelled });
            } else if job.expired(now) {
                dropped.push(Dropped { job, reason: DropReason::DeadlineExceeded });
            } else {
                kept.push_back(job);
            }
        }
        self.queue = kept;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::sync::Arc;

    use super::*;
    use crate::Class;

    #[derive(Debug, Default, Clone)]
    struct Payload(Rc<Cell<bool>>);

    impl Queued for Payload {
        fn is_cancelled(&self) -> bool {
            self.0.get()
        }
    }

    fn job(id: u64, arrival: Instant, deadline: Option<Instant>) -> Job<Payload> {
        Job {
            id,
            tenant: Arc::from("t"),
            class: Class::Standard,
            arrival,
            deadline,
            cost: 1.0,
            bytes: 0,
            payload: Payload::default(),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ids(batch: &Batch<Payload>) -> Vec<u64> {
        batch.jobs.iter().map(|j| j.id).collect()
    }

    #[test]
    fn waits_for_max_delay_then_dispatches_in_order() {
        let t0 = Instant::now();
        let mut q = FifoQueue::new(10, BatchPolicy { max_size: 4, max_delay: ms(5) });
        q.submit(job(1, t0, None), t0).unwrap();
        q.submit(job(2, t0 + ms(1), None), t0 + ms(1)).unwrap();
        match q.poll(t0 + ms(2)).action {
            Action::WaitUntil(t) => assert_eq!(t, t0 + ms(5)),
            other => panic!("expected a wait, got {other:?}"),
        }
        match q.poll(t0 + ms(5)).action {
            Action::Dispatch(b) => assert_eq!(ids(&b), vec![1, 2]),
            other => panic!("expected a batch, got {other:?}"),
        }
        assert!(matches!(q.poll(t0 + ms(6)).action, Action::Idle));
    }

    #[test]
    fn full_batch_goes_at_once_and_respects_max_size() {
        let t0 = Instant::now();
        let mut q = FifoQueue::new(10, BatchPolicy { max_size: 2, max_delay: ms(100) });
        for id in 0..5 {
            q.submit(job(id, t0, None), t0).unwrap();
        }
        let mut seen = Vec::new();
        while let Action::Dispatch(b) = q.poll(t0).action {
            assert!(b.jobs.len() <= 2);
            seen.extend(ids(&b));
        }
        assert_eq!(seen, vec![0, 1, 2, 3]);
        assert_eq!(q.len(), 1, "the fifth job waits for company or max_delay");
    }

    #[test]
    fn bounded_queue_rejects_when_full() {
        let t0 = Instant::now();
        let mut q = FifoQueue::new(2, BatchPolicy::default());
        q.submit(job(1, t0, None), t0).unwrap();
        q.submit(job(2, t0, None), t0).unwrap();
        let err = q.submit(job(3, t0, None), t0).unwrap_err();
        assert_eq!(err.reason, RejectReason::QueueFull);
        assert_eq!(err.job.id, 3);
    }

    #[test]
    fn expired_and_cancelled_jobs_never_dispatch() {
        let t0 = Instant::now();
        let mut q = FifoQueue::new(10, BatchPolicy { max_size: 8, max_delay: ms(10) });
        let past = q.submit(job(0, t0, Some(t0)), t0).unwrap_err();
        assert_eq!(past.reason, RejectReason::DeadlineExceeded);

        q.submit(job(1, t0, Some(t0 + ms(3))), t0).unwrap();
        let cancelled = job(2, t0, None);
        let flag = cancelled.payload.0.clone();
        q.submit(cancelled, t0).unwrap();
        q.submit(job(3, t0, None), t0).unwrap();
        flag.set(true);

        let step = q.poll(t0 + ms(10));
        let mut reasons: Vec<_> = step.dropped.iter().map(|d| (d.job.id, d.reason)).collect();
        reasons.sort_by_key(|(id, _)| *id);
        assert_eq!(reasons, vec![(1, DropReason::DeadlineExceeded), (2, DropReason::Cancelled)]);
        match step.action {
            Action::Dispatch(b) => assert_eq!(ids(&b), vec![3]),
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}
