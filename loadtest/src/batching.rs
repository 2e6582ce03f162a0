//! Scheduler settings from a capacity search: with `capacity --metrics-url`, every step
//! records the gateway's mean batch size and mean backend time per batch (deltas of its
//! `infergate_batch_size` and `infergate_backend_execute_duration_seconds` histograms over
//! the step). A least-squares line through the steps gives the batch cost model
//! `t(b) = base + per_item × b`. Candidate settings (`batch.max_size` × `batch.max_delay`)
//! are then tried in infergate's own scheduler under the discrete-event simulator
//! (`infergate_scheduler::sim`), with the fitted cost model, the model's workers and Poisson
//! arrivals: at the measured capacity (the share answered within the SLO latency, then p99)
//! and at a quarter of it (p50: what waiting for batches costs a quiet replica). The best
//! candidate is proposed.
//!
//! Candidates: batch sizes from 1 to twice `b_need = λ·base / (1 − λ·per_item)` (the batch a
//! replica needs to keep up with rate `λ` on one worker) over powers of two, none so large
//! that one batch takes more than half the SLO; delays from 0 to the time `b_need`
//! requests take to arrive, none above half the SLO's slack after a full batch.

use serde::Serialize;

use crate::capacity::CapacityReport;

/// Proposed scheduler settings for the measured model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// The fitted cost of a batch: `base_ms + per_item_ms × size`.
    pub base_ms: f64,
    pub per_item_ms: f64,
    /// The smallest batch that keeps up with the capacity rate on one worker.
    pub needed_batch: f64,
    pub workers: usize,
    pub max_batch: u32,
    pub max_delay_ms: f64,
    /// The simulated candidates, best first.
    pub candidates: Vec<Candidate>,
    /// Caveats the numbers come with.
    pub notes: Vec<String>,
}

/// One pair of settings as the simulator ran it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Candidate {
    pub max_batch: u32,
    pub max_delay_ms: f64,
    /// At the measured capacity: the share answered within the SLO latency, and p99.
    pub on_time: f64,
    pub p99_ms: f64,
    /// At a quarter of it: the median.
    pub quiet_p50_ms: f64,
}

/// Fit the batch cost model over the steps that batched and pick settings in the simulator;
/// `None` when fewer than two steps carry batch statistics.
pub fn advise(report: &CapacityReport, workers: usize) -> Option<Advice> {
    let capacity = report.capacity?;
    let workers = workers.max(1);
    let points: Vec<(f64, f64, f64)> = report
        .searches
        .iter()
        .flat_map(|s| s.steps.iter())
        .filter_map(|s| s.batch.map(|b| (b.mean_size, b.mean_execute_ms, b.batches)))
        .collect();
    if points.len() < 2 {
        return None;
    }
    // Weighted least squares (weights: batches per step).
    let w: f64 = points.iter().map(|p| p.2).sum();
    let mx = points.iter().map(|p| p.0 * p.2).sum::<f64>() / w;
    let my = points.iter().map(|p| p.1 * p.2).sum::<f64>() / w;
    let sxx: f64 = points.iter().map(|p| p.2 * (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| p.2 * (p.0 - mx) * (p.1 - my)).sum();
    let spread = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max)
        - points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let mut notes = Vec::new();
    let (base_ms, per_item_ms) = if spread < 0.5 || sxx <= 0.0 {
        // One batch size throughout: all of the time is attributed to the fixed cost.
        notes.push(format!("batch sizes hardly varied ({spread:.2}): no per-item cost could be separated"));
        (my, 0.0)
    } else {
        let slope = (sxy / sxx).max(0.0);
        ((my - slope * mx).max(0.0), slope)
    };
    let slo_ms = report.slo.latency_ms;
    let per_worker = capacity / workers as f64;
    let (base, per_item) = (base_ms / 1000.0, per_item_ms / 1000.0);
    let needed = if per_worker * per_item < 1.0 {
        (per_worker * base / (1.0 - per_worker * per_item)).max(1.0)
    } else {
        f64::INFINITY
    };
    // The largest batch that runs in half the SLO latency.
    let by_slo = if per_item_ms > 0.0 {
        ((slo_ms / 2.0 - base_ms) / per_item_ms).floor().clamp(1.0, 1024.0)
    } else {
        1024.0
    };
    if !needed.is_finite() || by_slo < needed {
        notes.push(format!(
            "at {capacity:.1} req/s the batch it needs ({needed:.1}) runs longer than half the SLO: \
             the SLO, not batching, limits this model"
        ));
    }
    let top = (2.0 * needed - 1e-9).ceil().min(by_slo).max(1.0) as u32;
    let mut sizes: Vec<u32> =
        std::iter::successors(Some(1u32), |b| b.checked_mul(2)).take_while(|b| *b < top).collect();
    sizes.extend([top, (needed.min(by_slo).ceil() as u32).max(1)]);
    sizes.sort_unstable();
    sizes.dedup();
    let fill_ms = if needed.is_finite() { needed / per_worker * 1000.0 } else { 0.0 };
    let mut candidates = Vec::new();
    for &size in &sizes {
        let slack_ms = ((slo_ms - base_ms - per_item_ms * f64::from(size)) / 2.0).max(0.0);
        let mut delays: Vec<f64> = [0.0, base_ms / 4.0, base_ms / 2.0, base_ms, fill_ms / 2.0, fill_ms]
            .into_iter()
            .map(|d| d.min(slack_ms))
            .collect();
        delays.sort_by(f64::total_cmp);
        delays.dedup_by(|a, b| (*a - *b).abs() < 0.05);
        for delay in delays {
            candidates.push(simulate(base_ms, per_item_ms, workers, size, delay, slo_ms, capacity));
        }
    }
    // The best share on time (to half a percent), then the lowest p99 at capacity plus the
    // quiet median.
    let best_on_time = candidates.iter().map(|c| c.on_time).fold(0.0, f64::max);
    candidates.sort_by(|a, b| {
        let good = |c: &Candidate| c.on_time >= best_on_time - 0.005;
        good(b).cmp(&good(a)).then((a.p99_ms + a.quiet_p50_ms).total_cmp(&(b.p99_ms + b.quiet_p50_ms)))
    });
    let best = candidates.first()?.clone();
    if best.on_time < report.slo.min_goodput {
        notes.push(format!(
            "even the best settings answer {:.2}% within the SLO at {capacity:.1} req/s in the simulator",
            best.on_time * 100.0
        ));
    }
    candidates.truncate(8);
    Some(Advice {
        base_ms,
        per_item_ms,
        needed_batch: needed,
        workers,
        max_batch: best.max_batch,
        max_delay_ms: best.max_delay_ms,
        candidates,
        notes,
    })
}

/// One candidate in infergate's scheduler under the simulator: Poisson arrivals at `rate`
/// and at a quarter of it, each with the SLO latency as its deadline.
fn simulate(
    base_ms: f64,
    per_item_ms: f64,
    workers: usize,
    size: u32,
    delay_ms: f64,
    slo_ms: f64,
    rate: f64,
) -> Candidate {
    use infergate_scheduler::sim::{self, Backend, Pattern, Scenario, Task, Workload};
    let ms = |v: f64| std::time::Duration::from_secs_f64(v.max(0.0) / 1000.0);
    let workload = Workload {
        tasks: vec![Task {
            name: "model",
            unit: "requests",
            share: 1.0,
            size: (1.0, 1.0),
            output: None,
            deadline: ms(slo_ms),
            bytes_per_unit: 1.0,
            backend: Backend {
                base: ms(base_ms),
                per_cost: std::time::Duration::ZERO,
                per_item: ms(per_item_ms),
                per_step: std::time::Duration::ZERO,
                max_batch: size as usize,
                concurrency: workers,
            },
        }],
        interactive_share: 1.0,
        batch_deadline_factor: 10.0,
        max_delay: ms(delay_ms),
        limits: infergate_scheduler::QueueLimits {
            max_jobs: 100_000,
            tenant_max_jobs: 100_000,
            ..Default::default()
        },
        noise: 0.05,
    };
    let run = |at: f64| {
        let scenario = Scenario {
            load: at / workload.capacity(),
            workload: workload.clone(),
            policy: infergate_scheduler::Policy::Deadline,
            pattern: Pattern::Poisson,
            warmup: std::time::Duration::from_secs(3),
            duration: std::time::Duration::from_secs(20),
            seed: 1,
            drain: true,
        };
        sim::simulate(&scenario).total()
    };
    let (busy, quiet) = (run(rate), run(rate / 4.0));
    let q = |t: &sim::Tally, q: f64| sim::quantile(&t.latencies, q).map_or(f64::INFINITY, |s| s * 1000.0);
    Candidate {
        max_batch: size,
        max_delay_ms: delay_ms,
        on_time: sim::ratio(busy.on_time, busy.submitted),
        p99_ms: q(&busy, 0.99),
        quiet_p50_ms: q(&quiet, 0.5),
    }
}

/// The advice as the lines of a model's entry in infergate's configuration.
pub fn to_toml(advice: &Advice, model: &str) -> String {
    let delay_us = (advice.max_delay_ms * 1000.0).round() as u64;
    let mut text = format!(
        "# Generated by `infergate-load tune`: batch cost fitted as {:.3} ms + {:.4} ms per item;\n\
         # {:.1} items per batch keep each of {} worker(s) up with the measured capacity.\n",
        advice.base_ms, advice.per_item_ms, advice.needed_batch, advice.workers
    );
    if let Some(best) = advice.candidates.first() {
        text.push_str(&format!(
            "# Simulated (infergate's scheduler, Poisson arrivals): at capacity {:.2}% within the SLO,\n\
             # p99 {:.1} ms; at a quarter of it p50 {:.1} ms.\n",
            best.on_time * 100.0,
            best.p99_ms,
            best.quiet_p50_ms
        ));
    }
    for note in &advice.notes {
        text.push_str(&format!("# note: {note}\n"));
    }
    text.push_str(&format!(
        "[[models]]\nname = \"{}\"\nbatch = {{ max_size = {}, max_delay = \"{delay_us}us\" }}\n",
        model.replace('\\', "\\\\").replace('"', "\\\""),
        advice.max_batch
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::{BatchStats, Search, Slo, Step};
    use crate::report::Metric;

    fn report(points: &[(f64, f64)], capacity: f64) -> CapacityReport {
        let steps = points
            .iter()
            .enumerate()
            .map(|(i, (size, ms))| Step {
                rate: 100.0 * (i + 1) as f64,
                offered_per_s: 0.0,
                achieved_per_s: 0.0,
                latency_ms: None,
                slo_latency_ms: None,
                goodput: 1.0,
                passed: true,
                because: vec![],
                batch: Some(BatchStats { batches: 100.0, mean_size: *size, mean_execute_ms: *ms }),
            })
            .collect();
        CapacityReport {
            url: "http://x/".into(),
            slo: Slo {
                metric: Metric::Latency,
                quantile: 0.99,
                latency_ms: 2000.0,
                min_goodput: 0.99,
                min_throughput: 0.97,
            },
            searches: vec![Search {
                steps,
                capacity: Some(capacity),
                knee: None,
                limited_by_generator: false,
            }],
            capacity: Some(capacity),
            ci95: None,
        }
    }

    #[test]
    fn the_cost_model_is_fitted_and_the_simulator_picks_settings_that_keep_up() {
        // t(b) = 100 ms + 20 ms × b; at 40 req/s one worker needs b ≥ 4/(1 − 0.8) = 20.
        let r = report(&[(2.0, 140.0), (8.0, 260.0), (16.0, 420.0)], 40.0);
        let a = advise(&r, 1).unwrap_or_else(|| panic!("no advice"));
        assert!((a.base_ms - 100.0).abs() < 1e-9 && (a.per_item_ms - 20.0).abs() < 1e-9, "{a:?}");
        assert!((a.needed_batch - 20.0).abs() < 1e-9, "{a:?}");
        // Batches under 20 cannot keep up at 40 req/s: the simulator must say so.
        let small = a.candidates.iter().filter(|c| c.max_batch < 20);
        assert!(small.clone().all(|c| c.on_time < a.candidates[0].on_time), "{a:#?}");
        assert!(a.max_batch >= 20 && a.max_batch <= 40, "{a:#?}");
        assert!(a.candidates[0].on_time > 0.9, "{a:#?}");
        assert!(a.notes.is_empty(), "{a:?}");
        let toml = to_toml(&a, "embed");
        assert!(
            toml.contains(&format!("name = \"embed\"\nbatch = {{ max_size = {}, max_delay = ", a.max_batch)),
            "{toml}"
        );
    }

    #[test]
    fn an_slo_too_tight_for_the_batch_needed_is_said() {
        // 46 × 20 ms = 0.92: needs 4.6/0.08 = 57.5 items, 1250 ms: over half of 2000 ms.
        let a =
            advise(&report(&[(1.0, 120.0), (4.0, 180.0)], 46.0), 1).unwrap_or_else(|| panic!("no advice"));
        assert!(a.max_batch <= 45, "{a:?}");
        assert!(a.notes.iter().any(|n| n.contains("half the SLO")), "{a:?}");
        assert!(advise(&report(&[(1.0, 12.0)], 100.0), 1).is_none(), "one step cannot separate the costs");
        let flat =
            advise(&report(&[(1.0, 12.0), (1.1, 12.5)], 50.0), 1).unwrap_or_else(|| panic!("no advice"));
        assert_eq!(flat.per_item_ms, 0.0);
        assert!(flat.notes.iter().any(|n| n.contains("hardly varied")), "{flat:?}");
    }

    #[test]
    fn more_workers_need_smaller_batches() {
        let r = report(&[(2.0, 140.0), (8.0, 260.0), (16.0, 420.0)], 40.0);
        let four = advise(&r, 4).unwrap_or_else(|| panic!("no advice"));
        // 10 req/s per worker: 1/(1 − 0.2) = 1.25.
        assert!((four.needed_batch - 1.25).abs() < 1e-9, "{four:?}");
        assert!(four.max_batch <= 4, "{four:#?}");
    }
}
