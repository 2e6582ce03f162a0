//! An upper bound on what any policy can achieve in a run: a fluid bound,
//! so that "how close to the best possible" is a number beside each policy.
//!
//! Each model can finish at most `workers / w` jobs per second, where `w` is
//! the least worker time an average job can cost: a full batch's fixed cost
//! shared by its members, the job's own cost and per-job time, and (for
//! generation, where a batch decodes for its longest output, which is at
//! least the mean of its members') its own output's share of the decoding,
//! all at the mean of the batch-time noise. Over the run's window, the jobs
//! a model finishes on time are at most the jobs that arrived for it and at
//! most what its workers can finish; interactive jobs, served first, are
//! bounded alike. The bound ignores deadlines shorter than a job's own
//! service time and bursts (it uses the window's average): it is loose, never
//! beaten.

use super::report::{class_index, Outcome};
use super::workload::{Task, Workload};
use crate::Class;

/// The bound of one run: the most jobs on time per second, and the largest
/// share of interactive jobs on time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bound {
    pub goodput: f64,
    pub interactive_on_time: f64,
}

/// The least worker-seconds an average job of `task` costs.
fn least_secs(task: &Task, noise: f64) -> f64 {
    let b = &task.backend;
    let n = b.max_batch.max(1) as f64;
    let mean_size = (task.size.0 + task.size.1) / 2.0;
    let work = b.base.as_secs_f64() / n
        + b.per_cost.as_secs_f64() * mean_size
        + b.per_item.as_secs_f64()
        + b.per_step.as_secs_f64() * task.mean_output() / n;
    // The simulator multiplies batch times by exp(σZ), whose mean is exp(σ²/2).
    work * (noise * noise / 2.0).exp()
}

/// Jobs per second `task`'s model can finish at most, on average.
pub fn fluid_throughput(task: &Task, noise: f64) -> f64 {
    task.backend.concurrency as f64 / least_secs(task, noise)
}

/// The bound for `run`, from the jobs that arrived in its window.
pub fn bound(workload: &Workload, run: &Outcome) -> Bound {
    let (mut on_time, mut interactive, mut interactive_submitted) = (0.0, 0.0, 0u64);
    for (task, tallies) in workload.tasks.iter().zip(&run.tallies) {
        let most = fluid_throughput(task, workload.noise) * run.window;
        let mine = tallies[class_index(Class::Interactive)].submitted;
        let all = mine + tallies[class_index(Class::Batch)].submitted;
        on_time += (all as f64).min(most);
        interactive += (mine as f64).min(most);
        interactive_submitted += mine;
    }
    Bound {
        goodput: on_time / run.window.max(f64::MIN_POSITIVE),
        interactive_on_time: if interactive_submitted == 0 {
            1.0
        } else {
            interactive / interactive_submitted as f64
        },
    }
}
