//! Virtual-clock tests, one per scheduling rule.

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::{LatencySeed, QueueLimits, StepBudget};

#[derive(Debug, Default, Clone)]
struct Flag(Rc<Cell<bool>>);

impl Queued for Flag {
    fn is_cancelled(&self) -> bool {
        self.0.get()
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Batches cost 10 ms plus 1 ms per unit of cost.
fn config(policy: Policy) -> SchedulerConfig {
    SchedulerConfig {
        policy,
        max_batch: 4,
        max_delay: ms(5),
        concurrency: 1,
        latency: LatencySeed { base: ms(10), per_cost: ms(1), per_item: Duration::ZERO },
        ..SchedulerConfig::default()
    }
}

struct Harness {
    s: ModelScheduler<Flag>,
    t0: Instant,
    next: u64,
}

impl Harness {
    fn new(cfg: SchedulerConfig) -> Self {
        let t0 = Instant::now();
        Harness { s: ModelScheduler::new(cfg, t0), t0, next: 0 }
    }

    fn at(&self, offset_ms: u64) -> Instant {
        self.t0 + ms(offset_ms)
    }

    fn job(
        &mut self,
        tenant: &str,
        class: Class,
        arrival: u64,
        deadline: Option<u64>,
        cost: f64,
    ) -> Job<Flag> {
        self.next += 1;
        Job {
            id: self.next,
            tenant: Arc::from(tenant),
            class,
            arrival: self.at(arrival),
            deadline: deadline.map(|d| self.at(d)),
            cost,
            first_cost: cost,
            bytes: 100,
            payload: Flag::default(),
        }
    }

    /// Submit at `arrival`; returns the id (panics when refused).
    fn admit(&mut self, tenant: &str, class: Class, arrival: u64, deadline: Option<u64>, cost: f64) -> u64 {
        let job = self.job(tenant, class, arrival, deadline, cost);
        let id = job.id;
        let at = self.at(arrival);
        self.s.submit(job, at).map_err(|r| r.reason).expect("admitted");
        id
    }

    fn batch(&mut self, at: u64) -> Vec<u64> {
        match self.s.poll(self.at(at)).action {
            Action::Dispatch(b) => b.jobs.iter().map(|(j, _)| j.id).collect(),
            other => panic!("expected a batch at {at} ms, got {other:?}"),
        }
    }

    /// Dispatch and complete batches one at a time; the ids in dispatch order.
    fn drain(&mut self, at: u64) -> Vec<u64> {
        let mut order = Vec::new();
        while let Action::Dispatch(b) = self.s.poll(self.at(at)).action {
            order.extend(b.jobs.iter().map(|(j, _)| j.id));
            self.s.complete(b.id, Measured { elapsed: b.predicted, first: None, cost: None });
        }
        order
    }
}

#[test]
fn admission_rejects_what_cannot_meet_its_deadline() {
    let mut h = Harness::new(config(Policy::Deadline));
    // Alone, a cost-5 job takes 15 ms: a 10 ms deadline can never be met.
    let job = h.job("a", Class::Standard, 0, Some(10), 5.0);
    let rejected = h.s.submit(job, h.at(0)).unwrap_err();
    assert_eq!(rejected.reason, RejectReason::DeadlineInfeasible);
    assert!(!rejected.retryable, "no retry makes 15 ms fit in 10 ms");

    // Fill the queue with 20 jobs of 10 ms (amortised 2.5 + 1 ms each after batching).
    for _ in 0..40 {
        h.admit("a", Class::Standard, 0, Some(10_000), 10.0);
    }
    // 40 jobs × 12.5 ms ≈ 500 ms of the tenant's own work ahead: a 100 ms
    // deadline is refused, but a retry later could make it. (Another tenant
    // would be admitted: fair sharing serves it alongside.)
    let job = h.job("a", Class::Standard, 0, Some(100), 1.0);
    let rejected = h.s.submit(job, h.at(0)).unwrap_err();
    assert_eq!(rejected.reason, RejectReason::DeadlineInfeasible);
    assert!(rejected.retryable);
    assert!(rejected.retry_after.is_some_and(|r| r > ms(100)), "{:?}", rejected.retry_after);
    assert_eq!(h.s.counters().rejected[&RejectReason::DeadlineInfeasible], 2);
}

#[test]
fn earliest_deadline_runs_first() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    let late = h.admit("a", Class::Standard, 0, Some(1000), 1.0);
    let soon = h.admit("a", Class::Standard, 0, Some(100), 1.0);
    let best_effort = h.admit("a", Class::Standard, 0, None, 1.0);
    let middle = h.admit("a", Class::Standard, 0, Some(500), 1.0);
    assert_eq!(h.drain(0), vec![soon, middle, late, best_effort]);
}

#[test]
fn weights_favour_interactive_slack() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    // Same deadline; the interactive job's slack weighs four times more.
    let batch = h.admit("bulk", Class::Batch, 0, Some(400), 1.0);
    let interactive = h.admit("web", Class::Interactive, 0, Some(400), 1.0);
    assert_eq!(h.drain(0), vec![interactive, batch]);
}

#[test]
fn fair_sharing_keeps_a_flooding_tenant_from_starving_others() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    let flood: Vec<u64> = (0..50).map(|_| h.admit("flood", Class::Standard, 0, Some(60_000), 1.0)).collect();
    let light: Vec<u64> = (0..5).map(|_| h.admit("light", Class::Standard, 1, Some(60_000), 1.0)).collect();
    let order = h.drain(1);
    assert_eq!(order.len(), 55);
    // Every light job runs within the first dozen dispatches, interleaved.
    // Each round of deficit round robin serves about four 11 ms jobs per tenant.
    let last_light = order.iter().rposition(|id| light.contains(id)).unwrap();
    assert!(last_light <= 12, "light tenant finished at position {last_light}: {order:?}");
    assert!(order[..12].iter().any(|id| flood.contains(id)), "the flooding tenant is not starved either");
}

#[test]
fn best_effort_never_runs_ahead_of_deadline_work() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 2, ..config(Policy::Deadline) });
    let relaxed = h.admit("a", Class::Interactive, 0, None, 1.0);
    let urgent: Vec<u64> = (0..3).map(|_| h.admit("b", Class::Batch, 0, Some(60_000), 1.0)).collect();
    let order = h.drain(10);
    assert_eq!(&order[..3], &urgent[..]);
    assert_eq!(order[3], relaxed, "best effort still runs when nothing else waits");
}

#[test]
fn batches_grow_only_while_every_member_stays_feasible() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 8, ..config(Policy::Deadline) });
    // Batch time is 10 ms + 1 ms per cost. The first job can wait 40 ms.
    let tight = h.admit("a", Class::Standard, 0, Some(40), 10.0);
    let others: Vec<u64> = (0..6).map(|_| h.admit("a", Class::Standard, 0, Some(5_000), 10.0)).collect();
    // With the tight job, a batch may hold 10 + 10·n ≤ 40 → 3 jobs.
    let first = h.batch(0);
    assert_eq!(first.len(), 3, "{first:?}");
    assert_eq!(first[0], tight);
    assert!(first[1..].iter().all(|id| others.contains(id)));
}

#[test]
fn waits_for_company_only_as_long_as_slack_and_max_delay_allow() {
    let mut cfg = config(Policy::Deadline);
    cfg.max_delay = ms(50);
    let mut h = Harness::new(cfg);
    // Alone: 10 + 1 = 11 ms; with one more of the same size 12 ms. Deadline at 30 ms
    // leaves room to wait until 30 − 12 = 18 ms, before max_delay (50 ms).
    h.admit("a", Class::Standard, 0, Some(30), 1.0);
    let step = h.s.poll(h.at(0));
    assert!(step.dropped.is_empty(), "{:?}", step.dropped);
    match step.action {
        Action::WaitUntil(t) => assert_eq!(t, h.at(18)),
        other => panic!("expected to wait, got {other:?}"),
    }
    assert_eq!(h.batch(18).len(), 1);
    h.s.complete(0, Measured { elapsed: ms(11), first: None, cost: None });

    // Best effort: only max_delay bounds the wait.
    h.admit("a", Class::Standard, 100, None, 1.0);
    match h.s.poll(h.at(100)).action {
        Action::WaitUntil(t) => assert_eq!(t, h.at(150)),
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[test]
fn expired_infeasible_and_cancelled_jobs_never_reach_a_backend() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    let blocker = h.admit("a", Class::Standard, 0, Some(1000), 1.0);
    assert_eq!(h.batch(0), vec![blocker]);
    let expires = h.admit("a", Class::Standard, 1, Some(30), 1.0);
    let infeasible = h.admit("a", Class::Standard, 1, Some(70), 1.0);
    let job = h.job("a", Class::Standard, 1, Some(1000), 1.0);
    let cancelled = job.id;
    let flag = job.payload.0.clone();
    h.s.submit(job, h.at(1)).unwrap();
    let survivor = h.admit("a", Class::Standard, 1, Some(1000), 1.0);
    flag.set(true);

    // The worker frees up at 65 ms: `expires` is past due, `infeasible` (11 ms
    // of work, due at 70) can no longer make it, `cancelled` left.
    h.s.complete(0, Measured { elapsed: ms(65), first: None, cost: None });
    let step = h.s.poll(h.at(65));
    let mut reasons: Vec<(u64, DropReason)> = step.dropped.iter().map(|d| (d.job.id, d.reason)).collect();
    reasons.sort_by_key(|(id, _)| *id);
    assert_eq!(
        reasons,
        vec![
            (expires, DropReason::Expired),
            (infeasible, DropReason::Infeasible),
            (cancelled, DropReason::Cancelled)
        ]
    );
    match step.action {
        Action::Dispatch(b) => assert_eq!(b.jobs[0].0.id, survivor),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_job_that_can_no_longer_make_its_deadline_is_shed_before_it_expires() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    let blocker = h.admit("a", Class::Standard, 0, None, 1.0);
    assert_eq!(h.batch(0), vec![blocker]);
    // 11 ms alone, due at 100: it must start by 89. The worker stays busy,
    // so the scheduler wakes at 89 and sheds it (503), not at 100 (504).
    let waiting = h.admit("a", Class::Standard, 1, Some(100), 1.0);
    match h.s.poll(h.at(2)).action {
        Action::WaitUntil(t) => assert_eq!(t, h.at(89)),
        other => panic!("a busy worker still wakes for the queue: {other:?}"),
    }
    assert!(h.s.poll(h.at(88)).dropped.is_empty());
    let step = h.s.poll(h.at(89));
    assert_eq!(
        step.dropped.iter().map(|d| (d.job.id, d.reason)).collect::<Vec<_>>(),
        vec![(waiting, DropReason::Infeasible)]
    );
    assert!(matches!(step.action, Action::Idle));

    // Without predictions (fifo), the job leaves at its deadline, expired.
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Fifo) });
    h.admit("a", Class::Standard, 0, None, 1.0);
    h.batch(0);
    h.admit("a", Class::Standard, 1, Some(100), 1.0);
    assert!(h.s.poll(h.at(89)).dropped.is_empty());
    assert_eq!(h.s.poll(h.at(100)).dropped[0].reason, DropReason::Expired);
}

#[test]
fn concurrency_can_change_while_jobs_wait() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, concurrency: 1, ..config(Policy::Fifo) });
    for _ in 0..3 {
        h.admit("a", Class::Standard, 0, None, 1.0);
    }
    h.batch(0);
    assert!(matches!(h.s.poll(h.at(0)).action, Action::Idle), "one at a time");
    h.s.set_concurrency(3);
    h.batch(0);
    h.batch(0);
    h.s.set_concurrency(0);
    assert_eq!(h.s.config().concurrency, 1, "never below one");
}

#[test]
fn concurrency_limits_running_batches() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, concurrency: 2, ..config(Policy::Fifo) });
    for _ in 0..4 {
        h.admit("a", Class::Standard, 0, None, 1.0);
    }
    let first = h.batch(0);
    let _second = h.batch(0);
    assert!(matches!(h.s.poll(h.at(0)).action, Action::Idle), "both workers busy");
    h.s.complete(0, Measured { elapsed: ms(11), first: None, cost: None });
    assert_eq!(h.batch(11).len(), 1);
    assert_eq!(first.len(), 1);
}

#[test]
fn queue_bounds_in_jobs_bytes_and_per_tenant() {
    let limits = QueueLimits { max_jobs: 3, max_bytes: 1000, tenant_max_jobs: 2, tenant_max_bytes: 1000 };
    let mut h = Harness::new(SchedulerConfig { limits, ..config(Policy::Deadline) });
    h.admit("a", Class::Standard, 0, None, 1.0);
    h.admit("a", Class::Standard, 0, None, 1.0);
    let third = h.job("a", Class::Standard, 0, None, 1.0);
    assert_eq!(h.s.submit(third, h.at(0)).unwrap_err().reason, RejectReason::TenantQueueFull);
    h.admit("b", Class::Standard, 0, None, 1.0);
    let fourth = h.job("c", Class::Standard, 0, None, 1.0);
    assert_eq!(h.s.submit(fourth, h.at(0)).unwrap_err().reason, RejectReason::QueueFull);

    let mut h = Harness::new(SchedulerConfig {
        limits: QueueLimits { max_bytes: 150, ..limits },
        ..config(Policy::Fifo)
    });
    h.admit("a", Class::Standard, 0, None, 1.0);
    let big = h.job("b", Class::Standard, 0, None, 1.0);
    assert_eq!(
        h.s.submit(big, h.at(0)).unwrap_err().reason,
        RejectReason::QueueFull,
        "100 + 100 bytes > 150"
    );
}

#[test]
fn fifo_and_priority_baselines_order_as_documented() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Fifo) });
    let a = h.admit("x", Class::Batch, 0, Some(1000), 1.0);
    let b = h.admit("y", Class::Interactive, 0, Some(100), 1.0);
    assert_eq!(h.drain(0), vec![a, b]);

    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Priority) });
    let batch = h.admit("x", Class::Batch, 0, Some(100), 1.0);
    let standard = h.admit("y", Class::Standard, 0, None, 1.0);
    let interactive = h.admit("z", Class::Interactive, 0, Some(1000), 1.0);
    assert_eq!(h.drain(0), vec![interactive, standard, batch]);

    // Neither predicts: an impossible deadline is admitted, then expires unrun.
    let mut h = Harness::new(config(Policy::Priority));
    h.admit("x", Class::Batch, 0, Some(1), 50.0);
    let step = h.s.poll(h.at(2));
    assert_eq!(step.dropped[0].reason, DropReason::Expired);
}

#[test]
fn measured_batches_train_the_latency_model() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Deadline) });
    for i in 0..100 {
        h.admit("a", Class::Standard, i, None, 2.0);
        if let Action::Dispatch(b) = h.s.poll(h.at(i)).action {
            // The backend is three times slower than configured.
            h.s.complete(b.id, Measured { elapsed: ms(36), first: None, cost: None });
        }
    }
    let predicted = h.s.latency().predict(2.0, 1);
    assert!((predicted.as_secs_f64() - 0.036).abs() < 0.004, "{predicted:?}");
}

#[test]
fn step_admission_fills_the_running_set_within_its_budget() {
    let mut h = Harness::new(config(Policy::Deadline));
    let a = h.admit("t", Class::Interactive, 0, Some(1000), 300.0);
    let b = h.admit("t", Class::Interactive, 0, Some(1100), 300.0);
    let c = h.admit("t", Class::Interactive, 0, Some(1200), 300.0);
    let step = h.s.admit_step(h.at(0), StepBudget { slots: 8, tokens: 700.0 });
    let ids: Vec<u64> = step.admitted.iter().map(|(j, _)| j.id).collect();
    assert_eq!(ids, vec![a, b], "the third does not fit the KV budget");
    let step = h.s.admit_step(h.at(5), StepBudget { slots: 8, tokens: 1000.0 });
    assert_eq!(
        step.admitted.iter().map(|(j, _)| j.id).collect::<Vec<_>>(),
        vec![c],
        "it joins at a later step"
    );
}

#[test]
fn a_released_batch_frees_its_worker_without_teaching_the_latency_model() {
    let mut h = Harness::new(SchedulerConfig { max_batch: 1, ..config(Policy::Fifo) });
    let first = h.admit("a", Class::Standard, 0, None, 1.0);
    let second = h.admit("a", Class::Standard, 0, None, 1.0);
    assert_eq!(h.batch(0), vec![first]);
    assert!(matches!(h.s.poll(h.at(1)).action, Action::Idle), "the only worker is busy");
    let before = h.s.latency().predict(1.0, 1);

    // Its client left after 1 ms: the worker is free, and 1 ms is not taken
    // for what a batch of cost 1 needs.
    h.s.release(0);
    assert_eq!(h.s.running(), 0);
    assert_eq!(h.s.latency().predict(1.0, 1), before);
    assert_eq!(h.batch(1), vec![second]);
}
