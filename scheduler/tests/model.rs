//! The scheduler against a simple model, for every policy: random operations
//! on a virtual clock (time passes, jobs arrive, clients cancel, the caller
//! polls, batches finish, continuous-batching steps admit jobs), checking that
//! no job is lost or duplicated and that every dispatch keeps the batch
//! limits, the concurrency limit, deadlines and cancellations. Then the
//! deadline policy's fairness bound between a flooding and a light tenant.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infergate_scheduler::{
    Action, Batch, Class, DropReason, Dropped, Job, JobId, LatencySeed, Measured, ModelScheduler, Policy,
    QueueLimits, Queued, RejectReason, SchedulerConfig, StepBudget,
};
use proptest::prelude::*;
use proptest::sample::Index;

/// The client's side of a job: a flag it sets when it goes away.
#[derive(Debug, Clone, Default)]
struct Flag(Arc<AtomicBool>);

impl Queued for Flag {
    fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
struct Spec {
    tenant: usize,
    class: Class,
    cost: f64,
    /// Relative deadline; `None` asks for best effort.
    deadline: Option<Duration>,
    bytes: usize,
}

#[derive(Debug, Clone)]
enum Op {
    Advance(Duration),
    Submit(Spec),
    /// The client of some job submitted so far goes away.
    Cancel(Index),
    /// Poll; a batch dispatched now runs for `service`.
    Poll {
        service: Duration,
    },
    /// A continuous-batching step with this much room.
    Step {
        slots: usize,
        tokens: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    Queued,
    Rejected(RejectReason),
    Dropped(DropReason),
    Dispatched(u64),
}

#[derive(Debug)]
struct Entry {
    tenant: Arc<str>,
    class: Class,
    bytes: usize,
    arrival: Instant,
    deadline: Option<Instant>,
    /// Admission order: the scheduler's tie-break within a priority level.
    seq: u64,
    flag: Flag,
    fate: Fate,
}

/// A batch the model believes is running, and when it finishes.
#[derive(Debug)]
struct Running {
    id: u64,
    end: Instant,
    service: Duration,
}

enum Next {
    Dispatched,
    Wait(Instant),
    Idle,
}

struct Harness {
    sched: ModelScheduler<Flag>,
    cfg: SchedulerConfig,
    now: Instant,
    tenants: Vec<Arc<str>>,
    jobs: HashMap<JobId, Entry>,
    order: Vec<JobId>,
    running: Vec<Running>,
    admitted: u64,
    batches: u64,
}

impl Harness {
    fn new(cfg: SchedulerConfig, tenants: usize) -> Self {
        let now = Instant::now();
        Harness {
            sched: ModelScheduler::new(cfg.clone(), now),
            cfg,
            now,
            tenants: (0..tenants).map(|t| Arc::from(format!("tenant-{t}"))).collect(),
            jobs: HashMap::new(),
            order: Vec::new(),
            running: Vec::new(),
            admitted: 0,
            batches: 0,
        }
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Advance(by) => self.advance_to(self.now + *by),
            Op::Submit(spec) => self.submit(spec),
            Op::Cancel(index) => {
                if !self.order.is_empty() {
                    let id = self.order[index.index(self.order.len())];
                    self.jobs[&id].flag.0.store(true, Ordering::Relaxed);
                }
            }
            Op::Poll { service } => {
                self.poll(*service);
            }
            Op::Step { slots, tokens } => self.step(StepBudget { slots: *slots, tokens: *tokens }),
        }
        self.check_sync();
    }

    /// Move the clock, finishing every batch that ends by then.
    fn advance_to(&mut self, to: Instant) {
        assert!(to >= self.now);
        self.running.sort_by_key(|r| r.end);
        while self.running.first().is_some_and(|r| r.end <= to) {
            let r = self.running.remove(0);
            self.sched.complete(r.id, Measured { elapsed: r.service, first: None, cost: None });
        }
        self.now = to;
    }

    fn queued(&self) -> impl Iterator<Item = &Entry> {
        self.jobs.values().filter(|e| e.fate == Fate::Queued)
    }

    /// The rejection the model expects before the scheduler's own deadline
    /// prediction, if any.
    fn expected_rejection(
        &self,
        tenant: &Arc<str>,
        deadline: Option<Instant>,
        bytes: usize,
    ) -> Option<RejectReason> {
        let limits = self.cfg.limits;
        let (jobs, used) = self.queued().fold((0, 0), |(n, b), e| (n + 1, b + e.bytes));
        let (tenant_jobs, tenant_used) =
            self.queued().filter(|e| e.tenant == *tenant).fold((0, 0), |(n, b), e| (n + 1, b + e.bytes));
        if deadline.is_some_and(|d| d <= self.now) {
            Some(RejectReason::DeadlineExceeded)
        } else if jobs >= limits.max_jobs || used + bytes > limits.max_bytes {
            Some(RejectReason::QueueFull)
        } else if tenant_jobs >= limits.tenant_max_jobs || tenant_used + bytes > limits.tenant_max_bytes {
            Some(RejectReason::TenantQueueFull)
        } else {
            None
        }
    }

    fn submit(&mut self, spec: &Spec) {
        let id = self.order.len() as JobId;
        let tenant = self.tenants[spec.tenant % self.tenants.len()].clone();
        let deadline = spec.deadline.map(|d| self.now + d);
        let expected = self.expected_rejection(&tenant, deadline, spec.bytes);
        let flag = Flag::default();
        let job = Job {
            id,
            tenant: tenant.clone(),
            class: spec.class,
            arrival: self.now,
            deadline,
            cost: spec.cost,
            first_cost: spec.cost,
            bytes: spec.bytes,
            payload: flag.clone(),
        };
        let fate = match self.sched.submit(job, self.now) {
            Ok(_) => {
                assert_eq!(expected, None, "job {id} admitted");
                self.admitted += 1;
                Fate::Queued
            }
            Err(rejected) => {
                assert_eq!(rejected.job.id, id, "rejection hands back the job");
                match expected {
                    Some(reason) => assert_eq!(rejected.reason, reason, "job {id}"),
                    None => {
                        // Only the deadline policy predicts, and only deadline jobs can miss.
                        assert_eq!(rejected.reason, RejectReason::DeadlineInfeasible, "job {id}");
                        assert_eq!(self.cfg.policy, Policy::Deadline, "job {id}");
                        assert!(deadline.is_some(), "job {id}");
                    }
                }
                Fate::Rejected(rejected.reason)
            }
        };
        let seq = self.admitted;
        let entry = Entry {
            tenant,
            class: spec.class,
            bytes: spec.bytes,
            arrival: self.now,
            deadline,
            seq,
            flag,
            fate,
        };
        self.jobs.insert(id, entry);
        self.order.push(id);
    }

    fn poll(&mut self, service: Duration) -> Next {
        let step = self.sched.poll(self.now);
        self.record_dropped(step.dropped);
        match step.action {
            Action::Dispatch(batch) => {
                self.record_batch(batch, service);
                Next::Dispatched
            }
            Action::WaitUntil(at) => {
                assert!(at > self.now, "a wake-up at or before now would spin the caller");
                Next::Wait(at)
            }
            Action::Idle => Next::Idle,
        }
    }

    fn record_dropped(&mut self, dropped: Vec<Dropped<Flag>>) {
        for d in dropped {
            let id = d.job.id;
            let e = self.jobs.get_mut(&id).unwrap();
            assert_eq!(e.fate, Fate::Queued, "job {id} dropped but it was not queued");
            e.fate = Fate::Dropped(d.reason);
            assert_eq!(d.queue_wait, self.now - e.arrival, "job {id}");
            match d.reason {
                DropReason::Expired => assert!(e.deadline.is_some_and(|d| d <= self.now), "job {id}"),
                DropReason::Cancelled => assert!(e.flag.is_cancelled(), "job {id}"),
                DropReason::Infeasible => {
                    assert_eq!(self.cfg.policy, Policy::Deadline, "job {id}");
                    assert!(e.deadline.is_some_and(|d| d > self.now), "job {id}");
                }
            }
        }
    }

    /// Mark a job dispatched, checking what holds for every dispatched job.
    fn take_job(&mut self, id: JobId, batch: u64) -> &Entry {
        let now = self.now;
        let e = self.jobs.get_mut(&id).unwrap();
        assert_eq!(e.fate, Fate::Queued, "job {id} dispatched but it was not queued");
        e.fate = Fate::Dispatched(batch);
        assert!(!e.flag.is_cancelled(), "job {id} dispatched after its client went away");
        assert!(e.deadline.is_none_or(|d| now < d), "job {id} dispatched at or after its deadline");
        e
    }

    fn record_batch(&mut self, batch: Batch<Flag>, service: Duration) {
        let size = batch.jobs.len();
        assert!(size >= 1 && size <= self.cfg.max_batch, "batch of {size}");
        // A job costlier than the limit still runs, alone.
        assert!(size == 1 || batch.cost() <= self.cfg.max_batch_cost, "batch cost {}", batch.cost());
        assert!(
            self.running.len() < self.cfg.concurrency,
            "more than {} batches running",
            self.cfg.concurrency
        );
        assert_eq!(batch.dispatched_at, self.now);
        let mut ranks = Vec::new();
        let mut best_effort = false;
        for (job, decision) in &batch.jobs {
            assert_eq!((decision.batch_id, decision.batch_size), (batch.id, size));
            if self.cfg.policy == Policy::Deadline && job.deadline.is_some() {
                let slack = decision.slack.unwrap();
                assert!(slack >= 0.0, "job {} dispatched with predicted slack {slack}", job.id);
            }
            best_effort |= job.deadline.is_none();
            let policy = self.cfg.policy;
            ranks.push(rank(policy, self.take_job(job.id, batch.id)));
        }
        self.check_order(&ranks, best_effort);
        self.running.push(Running { id: batch.id, end: self.now + service, service });
        self.batches += 1;
    }

    /// What is still queued after a dispatch comes after what was dispatched.
    fn check_order(&self, ranks: &[(u8, u64)], best_effort: bool) {
        match self.cfg.policy {
            // One queue in (level, arrival) order: a batch is its head.
            Policy::Fifo | Policy::Priority => {
                let last = ranks.iter().max().unwrap();
                for e in self.queued() {
                    assert!(rank(self.cfg.policy, e) > *last, "a queued job ranks before a dispatched one");
                }
            }
            // Best effort never displaces deadline work.
            Policy::Deadline => {
                if best_effort {
                    assert!(
                        self.queued().all(|e| e.deadline.is_none()),
                        "best effort ran while deadline work waited"
                    );
                }
            }
        }
    }

    fn step(&mut self, budget: StepBudget) {
        let admission = self.sched.admit_step(self.now, budget);
        self.record_dropped(admission.dropped);
        assert!(admission.admitted.len() <= budget.slots);
        let cost: f64 = admission.admitted.iter().map(|(j, _)| j.cost).sum();
        assert!(cost <= budget.tokens + 1e-9, "step admitted cost {cost} over {}", budget.tokens);
        for (job, decision) in &admission.admitted {
            assert_eq!(decision.batch_size, admission.admitted.len());
            self.take_job(job.id, decision.batch_id);
        }
    }

    fn check_sync(&self) {
        assert_eq!(self.sched.len(), self.queued().count(), "queued jobs");
        assert_eq!(self.sched.running(), self.running.len(), "running batches");
    }

    /// Let everything finish: follow the scheduler's wake-ups and complete
    /// batches until nothing is queued or running.
    fn drain(&mut self) {
        for _ in 0..100_000 {
            let next_end = self.running.iter().map(|r| r.end).min();
            match self.poll(ms(1)) {
                Next::Dispatched => {}
                Next::Wait(at) => self.advance_to(next_end.map_or(at, |end| end.min(at))),
                Next::Idle => match next_end {
                    Some(end) => self.advance_to(end),
                    None => break,
                },
            }
            self.check_sync();
        }
        assert!(self.sched.is_empty(), "{} jobs stuck in the queue after draining", self.sched.len());
        assert_eq!(self.sched.running(), 0);
        assert!(self.running.is_empty());
    }

    /// Every job ended exactly once, and the counters agree with the model.
    fn check_accounts(&self) {
        let mut rejected: HashMap<RejectReason, u64> = HashMap::new();
        let mut dropped: HashMap<DropReason, u64> = HashMap::new();
        let mut dispatched = 0;
        for (id, e) in &self.jobs {
            match e.fate {
                Fate::Queued => panic!("job {id} lost"),
                Fate::Rejected(r) => *rejected.entry(r).or_default() += 1,
                Fate::Dropped(r) => *dropped.entry(r).or_default() += 1,
                Fate::Dispatched(_) => dispatched += 1,
            }
        }
        let c = self.sched.counters();
        assert_eq!(c.submitted, self.jobs.len() as u64);
        assert_eq!(c.admitted, self.admitted);
        assert_eq!(c.rejected.values().sum::<u64>(), rejected.values().sum::<u64>());
        for r in RejectReason::ALL {
            assert_eq!(
                c.rejected.get(&r).copied().unwrap_or(0),
                rejected.get(&r).copied().unwrap_or(0),
                "{r:?}"
            );
        }
        for r in DropReason::ALL {
            assert_eq!(
                c.dropped.get(&r).copied().unwrap_or(0),
                dropped.get(&r).copied().unwrap_or(0),
                "{r:?}"
            );
        }
        assert_eq!(c.dispatched, dispatched);
        assert_eq!(c.batches, self.batches);
    }
}

/// A job's place in a global order: priority level, then arrival.
fn rank(policy: Policy, e: &Entry) -> (u8, u64) {
    let level = match (policy, e.class) {
        (Policy::Priority, Class::Interactive) => 0,
        (Policy::Priority, Class::Standard) => 1,
        (Policy::Priority, Class::Batch) => 2,
        _ => 0,
    };
    (level, e.seq)
}

// ---------------------------------------------------------------------------
// Strategies.

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(Class::ALL.to_vec())
}

fn spec() -> impl Strategy<Value = Spec> {
    (0usize..4, class(), 1u32..=30, prop::option::weighted(0.8, 0u64..400), 0usize..1500).prop_map(
        |(tenant, class, cost, deadline, bytes)| Spec {
            tenant,
            class,
            cost: f64::from(cost),
            deadline: deadline.map(ms),
            bytes,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u64..60).prop_map(|n| Op::Advance(ms(n))),
        5 => spec().prop_map(Op::Submit),
        1 => any::<Index>().prop_map(Op::Cancel),
        4 => (1u64..40).prop_map(|n| Op::Poll { service: ms(n) }),
        1 => (0usize..4, 0u32..60).prop_map(|(slots, tokens)| Op::Step { slots, tokens: f64::from(tokens) }),
    ]
}

fn config(policy: Policy) -> impl Strategy<Value = SchedulerConfig> {
    let batching = (1usize..=5, prop::option::of(10u32..60), 0u64..20, 1usize..=3);
    let limits = (2usize..=24, 1usize..=12, 2000usize..20_000, 1000usize..10_000);
    let timing = (1u64..=10, 0u64..=400, 0u64..=300, 1u64..=30, 50u64..=500);
    (batching, limits, timing).prop_map(move |(batching, limits, timing)| {
        let (max_batch, max_cost, delay, concurrency) = batching;
        let (max_jobs, tenant_max_jobs, max_bytes, tenant_max_bytes) = limits;
        let (base, per_cost_us, per_item_us, quantum, horizon) = timing;
        SchedulerConfig {
            policy,
            max_batch,
            max_batch_cost: max_cost.map_or(f64::INFINITY, f64::from),
            max_delay: ms(delay),
            concurrency,
            limits: QueueLimits { max_jobs, max_bytes, tenant_max_jobs, tenant_max_bytes },
            latency: LatencySeed {
                base: ms(base),
                per_cost: Duration::from_micros(per_cost_us),
                per_item: Duration::from_micros(per_item_us),
            },
            best_effort_horizon: ms(horizon),
            fair_quantum: ms(quantum),
        }
    })
}

fn run_model(cfg: SchedulerConfig, tenants: usize, ops: &[Op]) {
    let mut h = Harness::new(cfg, tenants);
    for op in ops {
        h.run(op);
    }
    h.drain();
    h.check_accounts();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn deadline_policy_keeps_its_invariants(
        cfg in config(Policy::Deadline), tenants in 2usize..=4, ops in prop::collection::vec(op(), 1..200),
    ) {
        run_model(cfg, tenants, &ops);
    }

    #[test]
    fn fifo_policy_keeps_its_invariants(
        cfg in config(Policy::Fifo), tenants in 2usize..=4, ops in prop::collection::vec(op(), 1..200),
    ) {
        run_model(cfg, tenants, &ops);
    }

    #[test]
    fn priority_policy_keeps_its_invariants(
        cfg in config(Policy::Priority), tenants in 2usize..=4, ops in prop::collection::vec(op(), 1..200),
    ) {
        run_model(cfg, tenants, &ops);
    }
}

// ---------------------------------------------------------------------------
// Fairness.

/// A flooding tenant and a light one of the same class, each with equal-cost
/// jobs, under the deadline policy.
#[derive(Debug, Clone)]
struct Fairness {
    class: Class,
    max_batch: usize,
    quantum: Duration,
    base: Duration,
    /// The light tenant arrives once this many flood jobs have been dispatched.
    light_after: usize,
}

impl Fairness {
    /// Per-job service estimate `e` (seconds): the batch's fixed cost spread
    /// over a full batch (per-cost and per-item terms are zero here).
    fn estimate(&self) -> f64 {
        self.base.as_secs_f64() / self.max_batch as f64
    }

    /// The most the two tenants' dispatched job counts may differ while both
    /// are backlogged.
    ///
    /// Deficit round robin with quantum `Q = quantum·weight` (equal weights):
    /// a tenant pops only while its deficit is positive and pays `e` per job,
    /// and deficits are refilled, equally for every backlogged tenant, only
    /// when none has credit, by the fewest quanta that give one of them
    /// credit. So a backlogged tenant's deficit stays in `(−e, Q + e]`, both
    /// tenants receive the same credit while both are backlogged, and the
    /// work each was served over that period differs by the change in their
    /// deficits: less than `2·(Q + 2e)`, i.e. `2·(Q/e + 2)` jobs. (The 2·Q,
    /// where textbook DRR has one Q, is real: the flood may bank a full
    /// quantum just before the light tenant arrives and, having the more
    /// urgent heads, spend the next one first too.) Counting at batch
    /// granularity adds up to `max_batch` jobs popped after the light tenant
    /// ran dry.
    fn bound(&self) -> usize {
        let q = self.quantum.as_secs_f64() * self.class.weight();
        (2.0 * (q / self.estimate() + 2.0)).ceil() as usize + self.max_batch
    }

    /// Run the scenario; returns the largest difference in dispatched jobs
    /// seen while both tenants were backlogged, and the light tenant's job count.
    fn max_gap(&self) -> (usize, usize) {
        let bound = self.bound();
        let light = 2 * bound + 10;
        let flood = 3 * light + self.light_after;
        let cfg = SchedulerConfig {
            policy: Policy::Deadline,
            max_batch: self.max_batch,
            concurrency: 1,
            limits: QueueLimits {
                max_jobs: 100_000,
                max_bytes: usize::MAX,
                tenant_max_jobs: 100_000,
                tenant_max_bytes: usize::MAX,
            },
            latency: LatencySeed { base: self.base, ..LatencySeed::default() },
            fair_quantum: self.quantum,
            ..SchedulerConfig::default()
        };
        let mut now = Instant::now();
        let mut sched: ModelScheduler<Flag> = ModelScheduler::new(cfg, now);
        let tenants: [Arc<str>; 2] = [Arc::from("flood"), Arc::from("light")];
        let mut next_id = 0;
        let mut submit = |sched: &mut ModelScheduler<Flag>, tenant: usize, now: Instant| {
            let job = Job {
                id: next_id,
                tenant: tenants[tenant].clone(),
                class: self.class,
                arrival: now,
                deadline: Some(now + Duration::from_secs(3600)),
                cost: 1.0,
                first_cost: 1.0,
                bytes: 0,
                payload: Flag::default(),
            };
            next_id += 1;
            sched.submit(job, now).map(|_| ()).unwrap();
        };
        for _ in 0..flood {
            submit(&mut sched, 0, now);
        }
        let mut queued = [flood, 0];
        let mut served = [0usize; 2];
        let mut light_arrived = false;
        let mut gap = 0;
        loop {
            if !light_arrived && flood - queued[0] >= self.light_after {
                for _ in 0..light {
                    submit(&mut sched, 1, now);
                }
                queued[1] = light;
                light_arrived = true;
            }
            let both = queued[0] > 0 && queued[1] > 0;
            let step = sched.poll(now);
            assert!(step.dropped.is_empty(), "no job should be dropped");
            match step.action {
                Action::Dispatch(batch) => {
                    for (job, _) in &batch.jobs {
                        let t = usize::from(job.tenant == tenants[1]);
                        queued[t] -= 1;
                        if both {
                            served[t] += 1;
                        }
                    }
                    gap = gap.max(served[0].abs_diff(served[1]));
                    // The batch takes what it was predicted to, so the
                    // latency model (and each job's estimate) stays put.
                    now += batch.predicted;
                    sched.complete(batch.id, Measured { elapsed: batch.predicted, first: None, cost: None });
                }
                Action::WaitUntil(_) | Action::Idle => break,
            }
        }
        assert_eq!(queued, [0, 0]);
        assert_eq!(served[1], light, "the light tenant was backlogged from arrival to its last job");
        (gap, light)
    }
}

#[test]
fn a_flooding_tenant_cannot_starve_a_light_one() {
    let scenario = Fairness {
        class: Class::Standard,
        max_batch: 4,
        quantum: ms(20),
        base: ms(5),
        // Right after the flood's first job: it still holds most of a
        // quantum of credit, the worst moment for the light tenant.
        light_after: 1,
    };
    // Q = 40 ms, e = 1.25 ms: 32 jobs a round, so the bound is 2·34 + 4 = 72.
    assert_eq!(scenario.bound(), 72);
    let (gap, light) = scenario.max_gap();
    assert!(gap <= scenario.bound(), "gap {gap} over bound {}", scenario.bound());
    // Without fair sharing the flood, whose jobs are all more urgent, would
    // have run every one of its jobs ahead of the light tenant's.
    assert!(light > scenario.bound());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn fairness_bound_holds(
        class in class(),
        max_batch in 1usize..=8,
        quantum in 2u64..=40,
        base in 1u64..=20,
        light_after in 0usize..=200,
    ) {
        let scenario = Fairness {
            class,
            max_batch,
            quantum: ms(quantum),
            base: ms(base),
            light_after,
        };
        let (gap, _) = scenario.max_gap();
        prop_assert!(gap <= scenario.bound(), "gap {} over bound {}", gap, scenario.bound());
    }
}
