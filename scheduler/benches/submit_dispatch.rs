//! The scheduler's per-job cost at steady state: with 10,000 jobs queued,
//! one `submit` plus the `poll` that dispatches a job (and the `complete`
//! that frees its worker), so the queue stays at 10,000.
//!
//! `cargo bench -p infergate-scheduler --bench submit_dispatch`
//!
//! The virtual clock moves 1 ms per job, the latency model's service time,
//! so the 10 s backlog drains at the rate it would on a real worker; every
//! deadline lies 30–120 s ahead, so each job is feasible and none expires.
//! Eight tenants of one class take turns, so every one of them stays
//! backlogged (with mixed classes the light-weight tenants would hold most of
//! the queue and their waits would outgrow the deadlines).
//! The `*_only` variants time one half of the cycle each (with two clock
//! reads per job, a few tens of nanoseconds, in the figure).

// A benchmark is a test harness: a rejected job or a missing dispatch should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use infergate_rng::SplitMix64;
use infergate_scheduler::{
    Action, Class, Job, LatencySeed, Measured, ModelScheduler, Policy, QueueLimits, Queued, SchedulerConfig,
};

const QUEUED: usize = 10_000;
const TENANTS: usize = 8;
const SERVICE: Duration = Duration::from_millis(1);

/// A client that never goes away.
struct Live;

impl Queued for Live {
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A scheduler kept at `QUEUED` jobs, with its virtual clock.
struct Load {
    sched: ModelScheduler<Live>,
    now: Instant,
    next_id: u64,
    /// Reproducible deadlines.
    rng: SplitMix64,
    tenants: Vec<Arc<str>>,
}

impl Load {
    fn new(policy: Policy) -> Self {
        let now = Instant::now();
        let cfg = SchedulerConfig {
            policy,
            max_batch: 1,
            concurrency: 1,
            limits: QueueLimits {
                max_jobs: 1 << 20,
                max_bytes: usize::MAX,
                tenant_max_jobs: 1 << 20,
                tenant_max_bytes: usize::MAX,
            },
            latency: LatencySeed { base: SERVICE, ..LatencySeed::default() },
            ..SchedulerConfig::default()
        };
        let mut load = Load {
            sched: ModelScheduler::new(cfg, now),
            now,
            next_id: 0,
            rng: SplitMix64::new(1),
            tenants: (0..TENANTS).map(|t| Arc::from(format!("tenant-{t}"))).collect(),
        };
        for _ in 0..QUEUED {
            load.submit();
        }
        load
    }

    fn submit(&mut self) {
        let id = self.next_id;
        self.next_id += 1;
        let t = (id % TENANTS as u64) as usize;
        let ahead = Duration::from_millis(30_000 + self.rng.below(90_000));
        let job = Job {
            id,
            tenant: self.tenants[t].clone(),
            class: Class::Standard,
            arrival: self.now,
            deadline: Some(self.now + ahead),
            cost: 1.0,
            first_cost: 1.0,
            bytes: 256,
            payload: Live,
        };
        if let Err(rejected) = self.sched.submit(job, self.now) {
            panic!("job {id} rejected: {:?}", rejected.reason);
        }
    }

    /// Poll for the next job and finish it at once, as predicted (so the
    /// latency model stays put).
    fn dispatch(&mut self) {
        let step = self.sched.poll(self.now);
        assert!(step.dropped.is_empty(), "a job was dropped at steady state");
        let Action::Dispatch(batch) = step.action else { panic!("nothing dispatched") };
        let measured = Measured { elapsed: batch.predicted, first: None, cost: None };
        self.sched.complete(black_box(batch).id, measured);
    }

    fn tick(&mut self) {
        self.now += SERVICE;
    }
}

fn bench_policy(c: &mut Criterion, policy: Policy) {
    let name = policy.as_str();
    let mut load = Load::new(policy);
    c.bench_function(&format!("{name}/submit_dispatch"), |b| {
        b.iter(|| {
            load.tick();
            load.submit();
            load.dispatch();
        })
    });
    assert_eq!(load.sched.len(), QUEUED, "the queue should stay at its size");

    c.bench_function(&format!("{name}/submit_only"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                load.tick();
                let start = Instant::now();
                load.submit();
                spent += start.elapsed();
                load.dispatch();
            }
            spent
        })
    });
    c.bench_function(&format!("{name}/dispatch_only"), |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                load.tick();
                load.submit();
                let start = Instant::now();
                load.dispatch();
                spent += start.elapsed();
            }
            spent
        })
    });
    assert_eq!(load.sched.len(), QUEUED, "the queue should stay at its size");
}

fn submit_dispatch(c: &mut Criterion) {
    bench_policy(c, Policy::Deadline);
    bench_policy(c, Policy::Fifo);
}

criterion_group!(benches, submit_dispatch);
criterion_main!(benches);
