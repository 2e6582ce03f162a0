//! Scheduler settings from a capacity search: with `capacity --metrics-url`, every step
//! records the gateway's mean batch size and mean backend time per batch (deltas of its
//! `infergate_batch_size` and `infergate_backend_execute_duration_seconds` histograms over
//! the step). A least-squares line through the steps gives the batch cost model
//! `t(b) = base + per_item × b`, from which `tune` proposes the model's `batch.max_size` and
//! `batch.max_delay`:
//!
//! - a replica at capacity `λ` keeps up only with batches of at least
//!   `b_need = λ·base / (1 − λ·per_item)`; `max_size` is twice that (bursts), but never so
//!   large that one batch takes more than half the SLO latency;
//! - `max_delay` is the time `b_need` requests take to arrive (`b_need / λ`), but at most half
//!   the fixed cost `base` (a request held longer than that to share a batch loses more time
//!   than sharing saves; under load the queue fills batches anyway while the workers are busy)
//!   and at most half of what the SLO leaves after a full batch runs.

use serde::{Deserialize, Serialize};

use crate::capacity::CapacityReport;

/// Histogram series `capacity --metrics-url` reads, before and after each step.
pub const METRICS: [&str; 4] = [
    "infergate_batch_size_sum",
    "infergate_batch_size_count",
    "infergate_backend_execute_duration_seconds_sum",
    "infergate_backend_execute_duration_seconds_count",
];

/// What the gateway batched during one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    pub batches: f64,
    pub mean_size: f64,
    pub mean_execute_ms: f64,
}

impl BatchStats {
    /// From scrapes before and after a step (`None` when no batch ran).
    pub fn between(
        before: &std::collections::BTreeMap<String, f64>,
        after: &std::collections::BTreeMap<String, f64>,
    ) -> Option<BatchStats> {
        let delta =
            |name: &str| after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0);
        let batches = delta(METRICS[1]);
        let timed = delta(METRICS[3]);
        (batches > 0.0 && timed > 0.0).then(|| BatchStats {
            batches,
            mean_size: delta(METRICS[0]) / batches,
            mean_execute_ms: delta(METRICS[2]) / timed * 1000.0,
        })
    }
}

/// Proposed scheduler settings for the measured model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    /// The fitted cost of a batch: `base_ms + per_item_ms × size`.
    pub base_ms: f64,
    pub per_item_ms: f64,
    /// The smallest batch that keeps up with the capacity rate.
    pub needed_batch: f64,
    pub max_batch: u32,
    pub max_delay_ms: f64,
    /// Caveats the numbers come with.
    pub notes: Vec<String>,
}

/// Fit the batch cost model over the steps that batched and propose settings; `None` when
/// fewer than two steps carry batch statistics or their batch sizes do not differ enough
/// to separate the fixed from the per-item cost.
pub fn advise(report: &CapacityReport) -> Option<Advice> {
    let capacity = report.capacity?;
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
    let (base, per_item, rate) = (base_ms / 1000.0, per_item_ms / 1000.0, capacity);
    let needed =
        if rate * per_item < 1.0 { (rate * base / (1.0 - rate * per_item)).max(1.0) } else { f64::INFINITY };
    // The largest batch that runs in half the SLO latency.
    let by_slo = if per_item_ms > 0.0 { ((slo_ms / 2.0 - base_ms) / per_item_ms).floor() } else { 1024.0 };
    let mut max_batch = (2.0 * needed - 1e-9).ceil().min(by_slo).clamp(1.0, 1024.0);
    if !needed.is_finite() || by_slo < needed {
        notes.push(format!(
            "at {capacity:.1} req/s the batch it needs ({needed:.1}) runs longer than half the SLO: \
             the SLO, not batching, limits this model"
        ));
        max_batch = by_slo.clamp(1.0, 1024.0);
    }
    let full_ms = base_ms + per_item_ms * max_batch;
    let fill_ms = if needed.is_finite() { needed / rate * 1000.0 } else { 0.0 };
    let max_delay_ms = fill_ms.min(base_ms / 2.0).min(((slo_ms - full_ms) / 2.0).max(0.0));
    Some(Advice {
        base_ms,
        per_item_ms,
        needed_batch: needed,
        max_batch: max_batch as u32,
        max_delay_ms,
        notes,
    })
}

/// The advice as the lines of a model's entry in infergate's configuration.
pub fn to_toml(advice: &Advice, model: &str) -> String {
    let delay_us = (advice.max_delay_ms * 1000.0).round() as u64;
    let mut text = format!(
        "# Generated by `infergate-load tune`: batch cost fitted as {:.3} ms + {:.4} ms per item;\n\
         # {:.1} items per batch keep up with the measured capacity.\n",
        advice.base_ms, advice.per_item_ms, advice.needed_batch
    );
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
    use crate::capacity::{Search, Slo, Step};
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
                latency_ms: 200.0,
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
    fn the_cost_model_and_the_settings_follow_from_the_steps() {
        // t(b) = 10 ms + 2 ms × b; at 400 req/s a replica needs b ≥ 0.4·10/(1 − 0.8) = 20.
        let r = report(&[(2.0, 14.0), (8.0, 26.0), (16.0, 42.0)], 400.0);
        let a = advise(&r).unwrap_or_else(|| panic!("no advice"));
        assert!((a.base_ms - 10.0).abs() < 1e-9 && (a.per_item_ms - 2.0).abs() < 1e-9, "{a:?}");
        assert!((a.needed_batch - 20.0).abs() < 1e-9, "{a:?}");
        // Twice 20 would take 90 ms, within half the 200 ms SLO; filling 20 takes 50 ms, but
        // holding a request longer than half the 10 ms fixed cost does not pay: 5 ms.
        assert_eq!(a.max_batch, 40);
        assert!((a.max_delay_ms - 5.0).abs() < 1e-9, "{a:?}");
        assert!(a.notes.is_empty());
        let toml = to_toml(&a, "embed");
        assert!(
            toml.contains("name = \"embed\"\nbatch = { max_size = 40, max_delay = \"5000us\" }"),
            "{toml}"
        );
    }

    #[test]
    fn an_slo_too_tight_for_the_batch_needed_is_said() {
        let a = advise(&report(&[(1.0, 12.0), (4.0, 18.0)], 460.0)).unwrap_or_else(|| panic!("no advice"));
        // 460 × 2 ms = 0.92: needs 0.46·10/0.08 = 57.5 items, 125 ms: over half of 200 ms, so
        // the batch is capped at the 45 that run in 100 ms.
        assert_eq!(a.max_batch, 45);
        assert_eq!(a.notes.len(), 1, "{a:?}");
        assert!(advise(&report(&[(1.0, 12.0)], 100.0)).is_none(), "one step cannot separate the costs");
        let flat = advise(&report(&[(1.0, 12.0), (1.1, 12.5)], 50.0)).unwrap_or_else(|| panic!("no advice"));
        assert_eq!((flat.per_item_ms, flat.notes.len()), (0.0, 1));
    }

    #[test]
    fn stats_are_deltas_of_the_histograms() {
        let scrape = |v: [f64; 4]| METRICS.iter().map(|m| m.to_string()).zip(v).collect();
        let s = BatchStats::between(&scrape([10.0, 5.0, 0.5, 5.0]), &scrape([70.0, 15.0, 0.9, 15.0]));
        assert_eq!(s, Some(BatchStats { batches: 10.0, mean_size: 6.0, mean_execute_ms: 40.0 }));
        assert_eq!(BatchStats::between(&scrape([1.0; 4]), &scrape([1.0; 4])), None);
    }
}
