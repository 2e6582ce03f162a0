//! What the simulator runs: the backends (ground-truth latency models), the
//! tasks that use them, and the arrival processes that generate traffic.

use std::time::Duration;

use infergate_rng::SplitMix64;

use crate::{Class, LatencySeed, Policy, QueueLimits, SchedulerConfig};

/// A model's workers: how long a batch really takes (the simulator's truth).
///
/// A batch of `n` jobs with summed first cost `Σc` reaches its deadline event
/// after `(base + per_cost·Σc + per_item·n)·noise`. For generation that is the
/// prefill (first token); the worker then decodes for `per_step` times the
/// longest output in the batch (static batching).
#[derive(Debug, Clone, PartialEq)]
pub struct Backend {
    pub base: Duration,
    pub per_cost: Duration,
    pub per_item: Duration,
    /// Decoding time per generated token (zero for non-generative models).
    pub per_step: Duration,
    pub max_batch: usize,
    /// Workers (batches that may run at once).
    pub concurrency: usize,
}

impl Backend {
    /// The scheduler's latency seed: the true prefill/batch coefficients.
    pub fn seed(&self) -> LatencySeed {
        LatencySeed { base: self.base, per_cost: self.per_cost, per_item: self.per_item }
    }
}

/// One kind of request, served by its own model.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub name: &'static str,
    /// The cost unit (tokens, megapixels, audio seconds, prompt tokens).
    pub unit: &'static str,
    /// Fraction of all requests.
    pub share: f64,
    /// Job size in `unit`, uniform in this range (for chat: the prompt).
    pub size: (f64, f64),
    /// Generated tokens, uniform in this range (chat only).
    pub output: Option<(u32, u32)>,
    /// The interactive deadline (on the first token for chat).
    pub deadline: Duration,
    /// Bytes a queued job holds per unit of size.
    pub bytes_per_unit: f64,
    pub backend: Backend,
}

impl Task {
    fn mean_size(&self) -> f64 {
        (self.size.0 + self.size.1) / 2.0
    }

    /// Expected generated tokens per job (what a gateway would estimate from usage).
    pub fn mean_output(&self) -> f64 {
        self.output.map_or(0.0, |(lo, hi)| f64::from(lo + hi) / 2.0)
    }

    /// Seconds a full batch of average jobs keeps a worker busy:
    /// `a + b·B·E[size] + c·B (+ step·E[max of B outputs])`, where the mean of
    /// the largest of `B` uniform draws on `[lo, hi]` is `lo + (hi − lo)·B/(B+1)`.
    pub fn full_batch_secs(&self) -> f64 {
        let b = &self.backend;
        let n = b.max_batch as f64;
        let decode = self.output.map_or(0.0, |(lo, hi)| {
            let (lo, hi) = (f64::from(lo), f64::from(hi));
            b.per_step.as_secs_f64() * (lo + (hi - lo) * n / (n + 1.0))
        });
        b.base.as_secs_f64()
            + b.per_cost.as_secs_f64() * n * self.mean_size()
            + b.per_item.as_secs_f64() * n
            + decode
    }

    /// Jobs per second the model completes when every worker runs full batches.
    pub fn throughput(&self) -> f64 {
        let b = &self.backend;
        (b.concurrency * b.max_batch) as f64 / self.full_batch_secs()
    }
}

/// A set of tasks and the scheduling limits shared by every policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub tasks: Vec<Task>,
    /// Fraction of each task's traffic from the interactive tenant (the rest is batch).
    pub interactive_share: f64,
    /// Batch-tenant deadlines are the interactive ones times this.
    pub batch_deadline_factor: f64,
    pub max_delay: Duration,
    pub limits: QueueLimits,
    /// σ of the lognormal noise on every batch time (0.05: 95% within ±10%).
    pub noise: f64,
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1000.0)
}

/// A backend from milliseconds: `a`, `b` per unit, `c` per job, per decoding step.
fn backend(
    base: f64,
    per_cost: f64,
    per_item: f64,
    per_step: f64,
    max_batch: usize,
    concurrency: usize,
) -> Backend {
    Backend {
        base: ms(base),
        per_cost: ms(per_cost),
        per_item: ms(per_item),
        per_step: ms(per_step),
        max_batch,
        concurrency,
    }
}

impl Workload {
    /// The fixed mixed workload the scheduler targets refer to: 40%
    /// embeddings, 20% OCR, 10% transcription, 30% chat, each half from an
    /// interactive tenant and half from a batch tenant (deadlines ×10).
    ///
    /// Each model has its own latency model where batching pays (the fixed
    /// cost `a` is several times the per-job cost), and enough workers that
    /// its full-batch capacity at this mix is within 11% of the others'
    /// (transcription is the bottleneck): an overload of k× overloads every
    /// model about k×. See [`Task::full_batch_secs`] for the capacity formula.
    pub fn mixed() -> Workload {
        Workload {
            tasks: vec![
                // 20–200 tokens, 200 ms: a=20 ms, b=0.02 ms/token (2.2 ms per
                // average job), batch 32 in 90 ms, one worker: 354 jobs/s.
                Task {
                    name: "embeddings",
                    unit: "tokens",
                    share: 0.4,
                    size: (20.0, 200.0),
                    output: None,
                    deadline: ms(200.0),
                    bytes_per_unit: 4.0,
                    backend: backend(20.0, 0.02, 0.0, 0.0, 32, 1),
                },
                // 0.3–2 MP, 1 s: a=60 ms, b=20 ms/MP, c=5 ms per image (decode),
                // batch 8 in 284 ms, six workers: 169 jobs/s.
                Task {
                    name: "ocr",
                    unit: "MP",
                    share: 0.2,
                    size: (0.3, 2.0),
                    output: None,
                    deadline: ms(1000.0),
                    bytes_per_unit: 300e3,
                    backend: backend(60.0, 20.0, 5.0, 0.0, 8, 6),
                },
                // 5–30 s of audio, 15 s: a=300 ms, b=10 ms per audio second,
                // batch 8 in 1.7 s, 17 workers: 80 jobs/s.
                Task {
                    name: "transcription",
                    unit: "audio s",
                    share: 0.1,
                    size: (5.0, 30.0),
                    output: None,
                    deadline: ms(15_000.0),
                    bytes_per_unit: 32e3,
                    backend: backend(300.0, 10.0, 0.0, 0.0, 8, 17),
                },
                // 50–500 prompt tokens, 20–200 generated, first token in 1 s:
                // prefill a=30 ms, b=0.1 ms/token, then 15 ms per decoding step
                // for the longest output; batch 16 in 3.3 s, 50 workers: 242 jobs/s.
                Task {
                    name: "chat",
                    unit: "prompt tokens",
                    share: 0.3,
                    size: (50.0, 500.0),
                    output: Some((20, 200)),
                    deadline: ms(1000.0),
                    bytes_per_unit: 4.0,
                    backend: backend(30.0, 0.1, 0.0, 15.0, 16, 50),
                },
            ],
            interactive_share: 0.5,
            batch_deadline_factor: 10.0,
            max_delay: ms(5.0),
            // The gateway's default bound of 1024 jobs per model; each of the
            // two tenants may hold at most half of it.
            limits: QueueLimits {
                tenant_max_jobs: 512,
                tenant_max_bytes: 128 << 20,
                ..QueueLimits::default()
            },
            noise: 0.05,
        }
    }

    /// 1× load: the total arrival rate (jobs/s) at which the bottleneck model
    /// is fully busy with full batches, `min over tasks of throughput / share`.
    pub fn capacity(&self) -> f64 {
        self.tasks.iter().map(|t| t.throughput() / t.share).fold(f64::INFINITY, f64::min)
    }

    /// The deadline of a job of this task and class.
    pub fn deadline(&self, task: &Task, class: Class) -> Duration {
        match class {
            Class::Interactive => task.deadline,
            _ => task.deadline.mul_f64(self.batch_deadline_factor),
        }
    }

    /// The scheduler configuration of a task's model: identical across
    /// policies except for the policy itself.
    pub fn scheduler_config(&self, task: &Task, policy: Policy) -> SchedulerConfig {
        SchedulerConfig {
            policy,
            max_batch: task.backend.max_batch,
            max_delay: self.max_delay,
            concurrency: task.backend.concurrency,
            limits: self.limits,
            latency: task.backend.seed(),
            ..SchedulerConfig::default()
        }
    }
}

/// How arrivals are spread in time. Every (task, class) stream is an
/// independent process with the stream's mean rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    Poisson,
    /// Evenly spaced, as a load tester's constant-arrival-rate executor sends.
    Constant,
    /// Poisson at `(on + off) / on` times the mean rate during exponentially
    /// distributed on-periods (mean `on`), silent during off-periods (mean `off`).
    OnOff {
        on: Duration,
        off: Duration,
    },
}

impl Pattern {
    pub fn name(self) -> String {
        match self {
            Pattern::Poisson => "poisson".to_owned(),
            Pattern::Constant => "constant".to_owned(),
            Pattern::OnOff { on, off } => {
                format!("on-off {:.0}/{:.0} s", on.as_secs_f64(), off.as_secs_f64())
            }
        }
    }
}

/// One request entering the gateway.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Arrival {
    pub at: Duration,
    pub task: usize,
    pub class: Class,
    /// In the task's unit (prompt tokens for chat).
    pub size: f64,
    /// Tokens the request will generate (chat).
    pub output: u32,
}

/// Arrival times of one stream of mean `rate` per second over `[0, horizon)`.
fn times(rate: f64, pattern: Pattern, horizon: f64, rng: &mut SplitMix64) -> Vec<f64> {
    let mut out = Vec::new();
    if rate <= 0.0 {
        return out;
    }
    if pattern == Pattern::Constant {
        let gap = 1.0 / rate;
        let mut at = rng.next_f64() * gap;
        while at < horizon {
            out.push(at);
            at += gap;
        }
        return out;
    }
    let (on, off) = match pattern {
        Pattern::Poisson | Pattern::Constant => (horizon, 0.0),
        Pattern::OnOff { on, off } => (on.as_secs_f64().max(1e-3), off.as_secs_f64()),
    };
    let peak = rate * (on + off) / on;
    // Start in the stationary state: on with probability on / (on + off).
    let mut t = 0.0;
    let mut in_on = pattern == Pattern::Poisson || rng.chance(on / (on + off));
    while t < horizon {
        let period =
            if pattern == Pattern::Poisson { horizon } else { rng.exponential(if in_on { on } else { off }) };
        let end = (t + period).min(horizon);
        if in_on {
            let mut at = t + rng.exponential(1.0 / peak);
            while at < end {
                out.push(at);
                at += rng.exponential(1.0 / peak);
            }
        }
        t = end;
        in_on = !in_on;
    }
    out
}

impl Workload {
    /// Every arrival over `[0, horizon)` at `rate` jobs/s in total, sorted by
    /// time; the rate ramps up linearly over `[0, ramp)` (by thinning), so the
    /// workers do not all start at once and stay in phase. Depends only on
    /// the arguments, so every policy sees the same requests.
    pub(crate) fn arrivals(
        &self,
        rate: f64,
        pattern: Pattern,
        horizon: Duration,
        ramp: Duration,
        seed: u64,
    ) -> Vec<Arrival> {
        let ramp = ramp.as_secs_f64();
        let mut root = SplitMix64::new(seed);
        let mut all = Vec::new();
        for (i, task) in self.tasks.iter().enumerate() {
            for class in [Class::Interactive, Class::Batch] {
                let part = match class {
                    Class::Interactive => self.interactive_share,
                    _ => 1.0 - self.interactive_share,
                };
                let mut rng = root.fork(i as u64 * 2 + u64::from(class == Class::Batch));
                for at in times(rate * task.share * part, pattern, horizon.as_secs_f64(), &mut rng) {
                    if at < ramp && !rng.chance(at / ramp) {
                        continue;
                    }
                    let size = rng.uniform(task.size.0, task.size.1);
                    let output = task.output.map_or(0, |(lo, hi)| {
                        (f64::from(lo) + rng.next_f64() * f64::from(hi - lo + 1)).floor() as u32
                    });
                    all.push(Arrival { at: Duration::from_secs_f64(at), task: i, class, size, output });
                }
            }
        }
        all.sort_by_key(|a| a.at);
        all
    }
}
