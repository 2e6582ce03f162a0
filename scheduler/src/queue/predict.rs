//! Admission's prediction of when a new job's deadline event happens.
//!
//! Under the deadline policy tenants are served by deficit round robin, so a
//! new job waits for its own tenant's backlog plus what the other tenants are
//! served meanwhile: each at most its weight's share (relative to this
//! tenant's), and at most what it has queued plus what keeps arriving at its
//! recent rate — a tenant with an empty queue that keeps sending still takes
//! its share. That work leaves in full batches: the job waits for the batches
//! before its own, and its deadline event is that of the batch it joins (with
//! queued work riding along), not of the job alone. The wait is stretched in
//! proportion to the latency model's recent error, so that admission does not
//! promise right up to the edge of the deadline.

use std::time::{Duration, Instant};

use super::order::{Order, Place};
use super::{secs, ModelScheduler};
use crate::{Job, Queued};

/// The predicted wait is stretched by this many times the occupancy model's
/// mean relative error: 1.7× at the 4–5% error of a well-predicted model,
/// 3–4× for static generation batches whose length (the longest output) is
/// unknown at dispatch. Chosen in the simulator (`examples/compare.rs`): 4
/// (≈ 3σ of one batch's error) still left 4–6% of admitted jobs missing at
/// 2–3× overload, 16 keeps them under 1% with no loss of goodput.
const ERROR_MARGIN: f64 = 16.0;

/// Another tenant, as seen by a new job's prediction (work in worker-seconds).
struct Other {
    work: f64,
    /// Work arriving per second.
    rate: f64,
    /// The most it is served while this tenant's backlog and new job are.
    cap: f64,
    jobs: usize,
}

impl Other {
    /// Work it is served within the first `t` seconds.
    fn served(&self, t: f64) -> f64 {
        (self.work + self.rate * t).min(self.cap)
    }
}

/// Seconds until a job behind `ahead` worker-seconds of its own tenant's work
/// starts: the least `t` with `t = (ahead + Σ served(t)) / concurrency`.
/// Each `served` is linear until it reaches its cap, so the right side is
/// piecewise linear and concave: walk its pieces in order of saturation and
/// solve the linear equation on each (exact, O(k log k) for k tenants).
fn start_after(ahead: f64, others: &[Other], concurrency: f64) -> f64 {
    // (time it saturates, its cap, its pre-saturation intercept and slope)
    let mut pieces: Vec<(f64, f64, f64, f64)> = others
        .iter()
        .map(|o| {
            let saturates = if o.work >= o.cap {
                0.0
            } else if o.rate > 0.0 {
                (o.cap - o.work) / o.rate
            } else {
                f64::INFINITY
            };
            (saturates, o.cap, o.work, o.rate)
        })
        .collect();
    pieces.sort_by(|a, b| a.0.total_cmp(&b.0));
    // At t = 0: saturated terms count their cap, the others `work + rate·t`.
    let mut intercept = ahead;
    let mut slope = 0.0;
    for &(saturates, cap, work, rate) in &pieces {
        if saturates > 0.0 {
            intercept += work;
            slope += rate;
        } else {
            intercept += cap;
        }
    }
    let mut from = 0.0;
    for &(saturates, cap, work, rate) in pieces.iter().filter(|p| p.0 > 0.0) {
        if slope < concurrency {
            let t = intercept / (concurrency - slope);
            if t <= saturates {
                return t.max(from);
            }
        }
        // Past this point the term stops growing.
        intercept += cap - work;
        slope -= rate;
        from = saturates;
    }
    if slope < concurrency {
        (intercept / (concurrency - slope)).max(from)
    } else {
        from
    }
}

impl<P: Queued> ModelScheduler<P> {
    /// Predicted position and deadline-event time of a new job with this
    /// service estimate (no prediction outside the deadline policy).
    pub(super) fn predict(
        &self,
        job: &Job<P>,
        place: Place,
        estimate: f64,
        now: Instant,
    ) -> (usize, Option<Instant>) {
        let (Order::Fair(fair), Place::Bucket(b)) = (&self.order, place) else {
            return (self.slots.len(), None);
        };
        let at = self.nanos(now) as f64 * 1e-9;
        let own = &fair.buckets[b];
        let mine = own.work + estimate;
        let others: Vec<Other> = fair
            .buckets
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != b)
            .map(|(_, o)| Other {
                work: o.work,
                rate: o.rate(at),
                cap: mine * o.weight / own.weight,
                jobs: o.jobs,
            })
            .filter(|o| o.jobs > 0 || o.rate > 0.0)
            .collect();
        let wait = start_after(own.work, &others, self.cfg.concurrency as f64);
        let position = own.jobs
            + others
                .iter()
                .filter(|o| o.jobs > 0 && o.work > 0.0)
                .map(|o| ((o.served(wait) / o.work).min(1.0) * o.jobs as f64).ceil() as usize)
                .sum::<usize>();
        // Jobs leave in batches: the work ahead in earlier full batches is
        // waited for, the rest rides along in this job's batch.
        let size = self.cfg.max_batch;
        let earlier = if position == 0 { 0.0 } else { (position / size * size) as f64 / position as f64 };
        // A point prediction at the edge of the deadline turns every error
        // into a miss: stretch the wait by the latency model's recent error.
        let margin = 1.0 + ERROR_MARGIN * self.occupancy.relative_error();
        let start = self.worker_free_at(now) + secs(wait * earlier * margin);
        let predicted = job.deadline.map(|_| start + self.batch_first(job.first_cost, size));
        (position, predicted)
    }

    /// Time from a batch's start to its deadline event, for the batch of
    /// `size` a job of this first cost joins: it takes up to `size − 1` of
    /// the queued jobs along, each of their average first cost.
    fn batch_first(&self, first_cost: f64, size: usize) -> Duration {
        let queued = self.slots.len();
        let companions = queued.min(size - 1);
        let average = if queued == 0 { 0.0 } else { self.first_work.max(0.0) / queued as f64 };
        self.first.predict(first_cost + companions as f64 * average, companions + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_with_an_empty_queue_still_takes_its_share() {
        // Alone: own backlog over two workers.
        assert!((start_after(2.0, &[], 2.0) - 1.0).abs() < 1e-9);
        // A heavier tenant with nothing queued that sends 1.5 worker-seconds
        // per second, capped at 4× our work: we get 0.5 of 2 workers' time.
        let busy = Other { work: 0.0, rate: 1.5, cap: 4.0 * 2.5, jobs: 0 };
        assert!((start_after(2.0, &[busy], 2.0) - 4.0).abs() < 1e-6);
        // Its share caps what it takes: weight 1 against our 1 means 50:50.
        let flood = Other { work: 100.0, rate: 10.0, cap: 2.5, jobs: 50 };
        assert!((start_after(2.0, &[flood], 2.0) - 2.25).abs() < 1e-6);
    }
}
