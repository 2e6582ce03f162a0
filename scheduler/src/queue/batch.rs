//! Forming batches.
//!
//! When a worker is free, take the next job in order and grow the batch with
//! the following ones while the batch stays within its limits and every
//! member can still meet its deadline (deadline policy). Then either
//! dispatch, or, when the batch has room and nothing else is waiting, wait
//! for company — never past `max_delay`, and (deadline policy) never past the
//! point where the tightest member could still absorb one more job.

use std::time::Instant;

use super::order::{Key, Place};
use super::{Action, ModelScheduler, RunningBatch, Step};
use crate::{Batch, Decision, DropReason, Dropped, JobId, Policy, Queued};

/// A job taken out of order for a batch that may still be put back.
pub(super) struct Member {
    pub(super) id: JobId,
    pub(super) key: Key,
    pub(super) place: Place,
    pub(super) estimate: f64,
}

impl<P: Queued> ModelScheduler<P> {
    /// Drop dead jobs, then dispatch a batch if one is due.
    pub fn poll(&mut self, now: Instant) -> Step<P> {
        let mut dropped = Vec::new();
        self.sweep_expired(now, &mut dropped);
        let action = if self.running.len() >= self.cfg.concurrency {
            // Every worker busy: nothing to dispatch, but queued jobs still
            // leave on time (shed as infeasible before they would expire).
            self.next_expiry().map_or(Action::Idle, Action::WaitUntil)
        } else {
            self.form_batch(now, &mut dropped)
        };
        self.compact_expiry();
        Step { dropped, action }
    }

    /// Drop a job taken from the queue if it must not run: its client left,
    /// its deadline passed, or (deadline policy) it can no longer make it
    /// even alone. True when it may run.
    pub(super) fn still_runnable(&mut self, id: JobId, now: Instant, dropped: &mut Vec<Dropped<P>>) -> bool {
        let Some(job) = self.slots.get(&id).map(|s| &s.job) else { return false };
        let reason = if job.payload.is_cancelled() {
            DropReason::Cancelled
        } else if job.expired(now) {
            DropReason::Expired
        } else if self.cfg.policy == Policy::Deadline
            && job.deadline.is_some_and(|d| now + self.first.predict(job.first_cost, 1) > d)
        {
            DropReason::Infeasible
        } else {
            return true;
        };
        self.drop_job(id, reason, now, dropped);
        false
    }

    pub(super) fn take(&mut self) -> Option<Member> {
        let slots = &self.slots;
        let (id, place) = self.order.pop(|id| slots.get(&id).map(|s| s.estimate))?;
        let slot = self.slots.get(&id)?;
        Some(Member { id, key: slot.key, place, estimate: slot.estimate })
    }

    fn put_back(&mut self, members: Vec<Member>) {
        for m in members.into_iter().rev() {
            self.order.unpop(m.place, m.key, m.id, m.estimate);
        }
    }

    fn form_batch(&mut self, now: Instant, dropped: &mut Vec<Dropped<P>>) -> Action<P> {
        let deadline_policy = self.cfg.policy == Policy::Deadline;
        let mut members: Vec<Member> = Vec::new();
        let (mut cost, mut first_cost) = (0.0, 0.0);
        let mut tightest: Option<Instant> = None;
        let mut oldest = now;
        let mut exhausted = false;
        let mut skipped: Vec<Member> = Vec::new();
        while members.len() < self.cfg.max_batch {
            let Some(m) = self.take() else {
                exhausted = true;
                break;
            };
            if !self.still_runnable(m.id, now, dropped) {
                continue;
            }
            let Some(slot) = self.slots.get(&m.id) else { continue };
            let job = &slot.job;
            if !skipped.is_empty() && job.deadline.is_none() {
                // Deadline work set aside above still waits: best effort
                // must not take its place.
                self.order.unpop(m.place, m.key, m.id, m.estimate);
                break;
            }
            let grown_first = self.first.predict(first_cost + job.first_cost, members.len() + 1);
            let over_cost = cost + job.cost > self.cfg.max_batch_cost;
            let late = |d: Option<Instant>| deadline_policy && d.is_some_and(|d| now + grown_first > d);
            if !members.is_empty() && (over_cost || late(tightest)) {
                self.order.unpop(m.place, m.key, m.id, m.estimate);
                break;
            }
            if !members.is_empty() && late(job.deadline) {
                // Only this job's own deadline is too tight to ride along:
                // leave it for the next batch (where it may still fit alone)
                // and keep growing with the jobs behind it.
                skipped.push(m);
                if skipped.len() >= self.cfg.max_batch {
                    break;
                }
                continue;
            }
            cost += job.cost;
            first_cost += job.first_cost;
            oldest = oldest.min(job.arrival);
            if deadline_policy {
                tightest = match (tightest, job.deadline) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            members.push(m);
        }
        self.put_back(skipped);
        if members.is_empty() {
            return self.next_expiry().map_or(Action::Idle, Action::WaitUntil);
        }
        if members.len() < self.cfg.max_batch && exhausted {
            let mut due = oldest + self.cfg.max_delay;
            if let Some(d) = tightest {
                // Wait only while one more job of average size would still fit.
                let typical = first_cost / members.len() as f64;
                let grown = self.first.predict(first_cost + typical, members.len() + 1);
                due = due.min(d.checked_sub(grown).unwrap_or(now));
            }
            if due > now {
                self.put_back(members);
                let wake = self.next_expiry().map_or(due, |e| e.min(due));
                return Action::WaitUntil(wake);
            }
        }
        Action::Dispatch(self.dispatch(members, cost, first_cost, now))
    }

    fn dispatch(&mut self, members: Vec<Member>, cost: f64, first_cost: f64, now: Instant) -> Batch<P> {
        let id = self.next_batch;
        self.next_batch += 1;
        let size = members.len();
        let predicted = self.occupancy.predict(cost, size);
        let first = self.first.predict(first_cost, size);
        let jobs = members
            .into_iter()
            .filter_map(|m| self.remove(m.id))
            .map(|slot| {
                let decision = Decision {
                    queue_wait: slot.job.waited(now),
                    slack: slot.job.deadline.map(|d| signed_secs(d, now + first)),
                    position: slot.position,
                    batch_id: id,
                    batch_size: size,
                };
                (slot.job, decision)
            })
            .collect();
        self.running
            .insert(id, RunningBatch { predicted_end: now + predicted, cost, first_cost, items: size });
        self.counters.batches += 1;
        self.counters.dispatched += size as u64;
        Batch { id, dispatched_at: now, predicted, jobs }
    }
}

/// `a − b` in seconds, negative when `a` is earlier.
fn signed_secs(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64()
    } else {
        -(b - a).as_secs_f64()
    }
}
