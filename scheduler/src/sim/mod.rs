//! A discrete-event simulator that runs the real scheduler under a virtual
//! clock: seeded arrivals from several tenants, one [`ModelScheduler`] per
//! model, and simulated workers whose batch times follow a known latency
//! model with noise.
//!
//! The clock is a base [`Instant`] plus virtual offsets: the scheduler only
//! compares and adds instants, so it cannot tell. Events are arrivals, batch
//! completions and the scheduler's own wake-ups (`WaitUntil`); after each,
//! the affected model is polled until it stops dispatching. Every random draw
//! comes from `infergate_rng::SplitMix64`, so a seed gives the same run on
//! every platform. Used by the policy comparison (`cargo run --release -p
//! infergate-scheduler --example compare`), by `infergate-load tune` to try
//! batch settings, and by tests.

mod bound;
mod report;
mod workload;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infergate_rng::SplitMix64;

pub use bound::{bound, fluid_throughput, Bound};
pub use report::{markdown_table, quantile, ratio, task_table, Ledger, Outcome, Tally};
pub use workload::{Backend, Pattern, Task, Workload};

use self::report::class_index;
use self::workload::Arrival;
use crate::{Action, Class, Job, Measured, ModelScheduler, Policy, Queued};

/// One simulation run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub workload: Workload,
    pub policy: Policy,
    /// Offered load as a multiple of [`Workload::capacity`].
    pub load: f64,
    pub pattern: Pattern,
    /// Arrivals before this are not counted (the latency models settle); the
    /// offered rate ramps up linearly over it.
    pub warmup: Duration,
    /// The measurement window after the warm-up; arrivals stop at its end.
    pub duration: Duration,
    pub seed: u64,
    /// Run on after the last arrival until every job has left (else stop at
    /// the end of the window and count what is still queued or running).
    pub drain: bool,
}

impl Scenario {
    /// The mixed workload under Poisson arrivals at `load` × capacity:
    /// 10 s of ramp-up, then a 60 s window, drained to the end.
    pub fn new(policy: Policy, load: f64) -> Scenario {
        Scenario {
            workload: Workload::mixed(),
            policy,
            load,
            pattern: Pattern::Poisson,
            warmup: Duration::from_secs(10),
            duration: Duration::from_secs(60),
            seed: 1,
            drain: true,
        }
    }
}

/// The payload the simulator's jobs carry.
#[derive(Debug)]
struct SimJob {
    /// Arrived inside the measurement window.
    counted: bool,
    /// Tokens the request generates (chat).
    output: u32,
    /// When admission predicted the deadline event.
    predicted: Option<Instant>,
}

impl Queued for SimJob {
    fn is_cancelled(&self) -> bool {
        false
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Arrive(usize),
    Done { model: usize, batch: u64 },
    Wake(usize),
}

/// A dispatched batch on its worker.
struct Running {
    start: Duration,
    /// When its deadline event (completion, or first token) happens.
    first: Duration,
    end: Duration,
    jobs: Vec<Job<SimJob>>,
    measured: Measured,
}

struct Model {
    sched: ModelScheduler<SimJob>,
    /// The wake-up already scheduled, if any.
    wake: Option<Duration>,
}

struct Sim<'a> {
    s: &'a Scenario,
    base: Instant,
    window: (Duration, Duration),
    models: Vec<Model>,
    events: BinaryHeap<Reverse<(Duration, u64, Event)>>,
    seq: u64,
    running: HashMap<(usize, u64), Running>,
    /// Admission's predictions of jobs still queued.
    predicted: HashMap<u64, Option<Instant>>,
    noise: SplitMix64,
    out: Outcome,
}

/// Run one scenario to its end and report what happened.
pub fn simulate(s: &Scenario) -> Outcome {
    let w = &s.workload;
    let rate = s.load * w.capacity();
    let end = s.warmup + s.duration;
    let arrivals = w.arrivals(rate, s.pattern, end, s.warmup, s.seed);
    let base = Instant::now();
    let out = Outcome {
        policy: s.policy,
        load: s.load,
        pattern: s.pattern.name(),
        rate,
        window: s.duration.as_secs_f64(),
        tasks: w.tasks.iter().map(|t| t.name).collect(),
        tallies: vec![Default::default(); w.tasks.len()],
        busy: vec![0.0; w.tasks.len()],
        workers: w.tasks.iter().map(|t| t.backend.concurrency).collect(),
        ledger: Ledger::default(),
        counters: Vec::new(),
        learned: Vec::new(),
    };
    let models = w
        .tasks
        .iter()
        .map(|t| Model { sched: ModelScheduler::new(w.scheduler_config(t, s.policy), base), wake: None })
        .collect();
    let mut sim = Sim {
        s,
        base,
        window: (s.warmup, end),
        models,
        events: BinaryHeap::new(),
        seq: 0,
        running: HashMap::new(),
        predicted: HashMap::new(),
        noise: SplitMix64::new(s.seed).fork(0x6e6f_6973),
        out,
    };
    for (i, a) in arrivals.iter().enumerate() {
        sim.push(a.at, Event::Arrive(i));
    }
    sim.run(&arrivals, end);
    sim.out
}

impl Sim<'_> {
    fn push(&mut self, at: Duration, event: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, event)));
    }

    fn counts(&self, at: Duration) -> bool {
        at >= self.window.0 && at < self.window.1
    }

    fn run(&mut self, arrivals: &[Arrival], end: Duration) {
        while let Some(Reverse((at, _, event))) = self.events.pop() {
            if !self.s.drain && at >= end {
                break;
            }
            match event {
                Event::Arrive(i) => {
                    if let Some(a) = arrivals.get(i) {
                        self.arrive(i as u64, a);
                        self.pump(a.task, at);
                    }
                }
                Event::Done { model, batch } => {
                    self.finish(model, batch);
                    self.pump(model, at);
                }
                Event::Wake(model) => {
                    if self.models[model].wake == Some(at) {
                        self.models[model].wake = None;
                        self.pump(model, at);
                    }
                }
            }
        }
        self.out.ledger.queued = self.models.iter().map(|m| m.sched.len() as u64).sum();
        self.out.ledger.running = self.running.values().map(|r| r.jobs.len() as u64).sum();
        self.out.counters = self.models.iter().map(|m| m.sched.counters().clone()).collect();
        self.out.learned = self
            .models
            .iter()
            .map(|m| [m.sched.latency().coefficients(), m.sched.first_latency().coefficients()])
            .collect();
    }

    fn arrive(&mut self, id: u64, a: &Arrival) {
        let w = &self.s.workload;
        let task = &w.tasks[a.task];
        let now = self.base + a.at;
        let job = Job {
            id,
            tenant: Arc::from(if a.class == Class::Interactive { "app" } else { "etl" }),
            class: a.class,
            arrival: now,
            deadline: Some(now + w.deadline(task, a.class)),
            cost: a.size + task.mean_output(),
            first_cost: a.size,
            bytes: (a.size * task.bytes_per_unit) as usize,
            payload: SimJob { counted: self.counts(a.at), output: a.output, predicted: None },
        };
        let counted = job.payload.counted;
        let result = self.models[a.task].sched.submit(job, now);
        let rejected = result.is_err();
        if let Ok(admitted) = result {
            self.predicted.insert(id, admitted.predicted);
        }
        self.out.ledger.submitted += 1;
        self.out.ledger.rejected += u64::from(rejected);
        if counted {
            let t = &mut self.out.tallies[a.task][class_index(a.class)];
            t.submitted += 1;
            t.rejected += u64::from(rejected);
        }
    }

    /// Poll a model until it stops dispatching.
    fn pump(&mut self, model: usize, at: Duration) {
        let now = self.base + at;
        loop {
            let step = self.models[model].sched.poll(now);
            for d in step.dropped {
                self.predicted.remove(&d.job.id);
                self.out.ledger.dropped += 1;
                if d.job.payload.counted {
                    self.out.tallies[model][class_index(d.job.class)].dropped += 1;
                }
            }
            match step.action {
                Action::Dispatch(batch) => {
                    let jobs = batch
                        .jobs
                        .into_iter()
                        .map(|(mut j, _)| {
                            j.payload.predicted = self.predicted.remove(&j.id).flatten();
                            j
                        })
                        .collect();
                    self.start(model, batch.id, jobs, at);
                }
                Action::WaitUntil(t) => {
                    // Never schedule into the past (that would spin).
                    let t = t.saturating_duration_since(self.base).max(at + Duration::from_nanos(1));
                    let m = &mut self.models[model];
                    if m.wake.is_none_or(|w| t < w) {
                        m.wake = Some(t);
                        self.push(t, Event::Wake(model));
                    }
                    break;
                }
                Action::Idle => break,
            }
        }
    }

    /// Run a batch on a worker: draw its true duration.
    fn start(&mut self, model: usize, batch: u64, jobs: Vec<Job<SimJob>>, at: Duration) {
        let task = &self.s.workload.tasks[model];
        let b = &task.backend;
        let n = jobs.len();
        let first_cost: f64 = jobs.iter().map(|j| j.first_cost).sum();
        let sigma = self.s.workload.noise;
        let first = (b.base + b.per_cost.mul_f64(first_cost) + b.per_item * n as u32)
            .mul_f64(lognormal_factor(&mut self.noise, sigma));
        let longest = jobs.iter().map(|j| j.payload.output).max().unwrap_or(0);
        let decode = (b.per_step * longest).mul_f64(lognormal_factor(&mut self.noise, sigma));
        let generative = task.output.is_some();
        let measured = Measured {
            elapsed: first + decode,
            first: generative.then_some(first),
            cost: generative.then(|| jobs.iter().map(|j| j.first_cost + f64::from(j.payload.output)).sum()),
        };
        let end = at + first + decode;
        self.push(end, Event::Done { model, batch });
        self.running.insert((model, batch), Running { start: at, first: at + first, end, jobs, measured });
    }

    /// A batch finished: tell the scheduler, score its jobs, account the busy time.
    fn finish(&mut self, model: usize, batch: u64) {
        let Some(run) = self.running.remove(&(model, batch)) else { return };
        self.models[model].sched.complete(batch, run.measured);
        let (from, to) = self.window;
        let busy = run.end.min(to).saturating_sub(run.start.max(from));
        self.out.busy[model] += busy.as_secs_f64();
        let event = self.base + run.first;
        for job in run.jobs {
            self.out.ledger.completed += 1;
            if !job.payload.counted {
                continue;
            }
            let t = &mut self.out.tallies[model][class_index(job.class)];
            if job.deadline.is_none_or(|d| event <= d) {
                t.on_time += 1;
            } else {
                t.late += 1;
            }
            t.latencies.push(event.saturating_duration_since(job.arrival).as_secs_f64());
            if let Some(p) = job.payload.predicted {
                let overrun = event.saturating_duration_since(p).as_secs_f64()
                    - p.saturating_duration_since(event).as_secs_f64();
                t.overrun.push(overrun);
            }
        }
    }
}

/// Multiplicative noise with median 1: `exp(σ·N(0,1))`, the normal draw
/// clamped to ±3σ so one batch cannot take arbitrarily long.
fn lognormal_factor(rng: &mut SplitMix64, sigma: f64) -> f64 {
    (sigma * rng.normal().clamp(-3.0, 3.0)).exp()
}

#[cfg(test)]
mod tests;
