//! Capacity search: the highest open-loop rate at which the target still meets its SLOs.
//!
//! Each step is an open-loop run at one rate. A step passes when the generator kept its
//! schedule, the SLO quantile of latency (from the intended send time) is within the SLO
//! latency, goodput — the share of the step's requests answered 2xx within the SLO
//! latency — is at least the SLO's, and the target completed at least `min_throughput` of
//! the offered rate (a step just over capacity can end before its growing backlog shows in
//! the latencies; its falling throughput shows it). The rate doubles from `start` until a step fails, then
//! bisects between the last pass and the first failure until they are within `precision` of
//! each other. The knee is the highest passing rate whose median latency is still within
//! 1.5× the median at the lowest rate: beyond it queueing, not service, sets the latency.
//! Repeated searches give a mean capacity with a 95% confidence interval. With
//! `--metrics-url` each step also records what the gateway batched ([`BatchStats`]), from
//! which `tune` fits a batch cost model ([`crate::batching`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::arrivals::Shape;
use crate::open::OpenLoop;
use crate::report::{Latency, Metric};
use crate::request::Target;

/// What a step must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// What the SLO latency is measured on: the whole response or, for streamed answers,
    /// the first token.
    #[serde(default)]
    pub metric: Metric,
    /// The quantile of `metric` that must stay within `latency_ms` (0.99 for p99).
    pub quantile: f64,
    pub latency_ms: f64,
    /// Share of requests answered 2xx within `latency_ms`.
    pub min_goodput: f64,
    /// Completed over offered rate a step must reach: below it the target is not keeping
    /// up, whatever a short step's latencies say (its backlog is still growing).
    #[serde(default = "default_throughput")]
    pub min_throughput: f64,
}

fn default_throughput() -> f64 {
    0.97
}

/// How to search.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub slo: Slo,
    /// The first rate tried (requests per second).
    pub start: f64,
    /// No rate above this is tried; reaching it passing ends the search there.
    pub max: f64,
    /// Bisection stops when the failing rate is within this fraction above the passing one.
    pub precision: f64,
    /// Measured time per step, after `warmup`.
    pub step: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    /// Arrivals, connections and in-flight cap of each step (its rate is replaced).
    pub open: OpenLoop,
    /// Searches run one after another.
    pub repeats: u32,
    /// The gateway's Prometheus endpoint, read before and after each step for its batching,
    /// and the model whose series to read (all when `None`).
    pub metrics: Option<(http::Uri, Option<String>)>,
}

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

/// One step of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub rate: f64,
    /// Arrivals in the measured window per second (a Poisson schedule's own count).
    #[serde(default)]
    pub offered_per_s: f64,
    pub achieved_per_s: f64,
    pub latency_ms: Option<Latency>,
    /// The SLO quantile of latency, in ms (`None` when nothing succeeded).
    pub slo_latency_ms: Option<f64>,
    pub goodput: f64,
    pub passed: bool,
    /// Why it failed.
    pub because: Vec<String>,
    /// What the gateway batched during the step (with `--metrics-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchStats>,
}

/// One search: its steps in the order run, and what they found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Search {
    pub steps: Vec<Step>,
    /// The highest passing rate (`None` when even `start` failed).
    pub capacity: Option<f64>,
    pub knee: Option<f64>,
    /// The generator, not the target, fell behind: the capacity is at least `capacity`.
    pub limited_by_generator: bool,
}

/// Every search and their summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityReport {
    pub url: String,
    pub slo: Slo,
    pub searches: Vec<Search>,
    /// Mean capacity over the searches that found one.
    pub capacity: Option<f64>,
    /// 95% confidence interval of the mean (Student's t), with two or more searches.
    pub ci95: Option<(f64, f64)>,
}

/// Run `settings.repeats` searches against `target`.
pub async fn search(target: &Target, settings: &Settings) -> anyhow::Result<CapacityReport> {
    anyhow::ensure!(settings.start > 0.0 && settings.start <= settings.max, "need 0 < --start <= --max");
    anyhow::ensure!(settings.precision > 0.0, "--precision must be positive");
    let mut searches = Vec::new();
    for repeat in 0..settings.repeats.max(1) {
        // Each search its own random schedules, or repeats would only repeat.
        let mut this = settings.clone();
        this.open.arrivals = settings.open.arrivals.reseeded(u64::from(repeat) << 32);
        searches.push(one_search(target, &this).await?);
    }
    let found: Vec<f64> = searches.iter().filter_map(|s| s.capacity).collect();
    let (capacity, ci95) = mean_ci(&found);
    Ok(CapacityReport { url: target.uri.to_string(), slo: settings.slo, searches, capacity, ci95 })
}

async fn one_search(target: &Target, settings: &Settings) -> anyhow::Result<Search> {
    let mut steps: Vec<Step> = Vec::new();
    let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
    let mut limited_by_generator = false;
    let mut rate = settings.start;
    // Doubling reaches any rate in ~log2(max/start) steps; bisection adds ~log2(1/precision).
    for _ in 0..64 {
        let (step, generator_behind) = run_step(target, settings, rate).await?;
        if settings.open.progress {
            eprintln!("{}", step_line(steps.len() + 1, &step));
        }
        let passed = step.passed;
        steps.push(step);
        if generator_behind {
            limited_by_generator = true;
            break;
        }
        if passed {
            pass = Some(rate);
        } else {
            fail = Some(rate);
        }
        rate = match (pass, fail) {
            (Some(lo), None) if lo >= settings.max => break,
            (Some(lo), None) => (lo * 2.0).min(settings.max),
            (None, Some(_)) => break,
            (Some(lo), Some(hi)) if (hi - lo) / lo <= settings.precision => break,
            (Some(lo), Some(hi)) => (lo + hi) / 2.0,
            (None, None) => break,
        };
    }
    let knee = knee(&steps);
    Ok(Search { steps, capacity: pass, knee, limited_by_generator })
}

/// One open-loop step; whether the generator itself fell behind.
async fn run_step(target: &Target, settings: &Settings, rate: f64) -> anyhow::Result<(Step, bool)> {
    let open = OpenLoop {
        arrivals: settings.open.arrivals.with_rate(rate).reseeded(rate.to_bits()),
        shape: Shape::Flat,
        replay: None,
        ..settings.open.clone()
    };
    let scrape = || async {
        let (url, model) = settings.metrics.as_ref()?;
        let names: Vec<String> = METRICS.iter().map(|m| m.to_string()).collect();
        crate::scrape::once(&crate::request::client(&target.tls), url, &names, model.as_deref()).await.ok()
    };
    let before = scrape().await;
    let result =
        crate::open::run(target.clone(), open, settings.warmup, Some(settings.step), None, settings.timeout)
            .await?;
    let batch = match (before, scrape().await) {
        (Some(before), Some(after)) => BatchStats::between(&before, &after),
        _ => None,
    };
    let summary = result.tally.summarize(result.elapsed);
    let slo = settings.slo;
    let sent = result.tally.requests() + result.schedule.skipped;
    let good = result.tally.successes_within(slo.metric, Duration::from_secs_f64(slo.latency_ms / 1000.0));
    let goodput = if sent == 0 { 0.0 } else { good as f64 / sent as f64 };
    let slo_latency_ms = result.tally.quantile_ms(slo.metric, slo.quantile);
    let mut because = result.schedule.invalid_because.clone();
    match slo_latency_ms {
        Some(ms) if ms > slo.latency_ms => because.push(format!(
            "p{} {} {ms:.1} ms is over {} ms",
            slo.quantile * 100.0,
            slo.metric.name(),
            slo.latency_ms
        )),
        Some(_) => {}
        None => because.push("no request succeeded".into()),
    }
    if goodput < slo.min_goodput {
        because.push(format!("goodput {:.4} is under {}", goodput, slo.min_goodput));
    }
    let offered = result.schedule.offered_per_s;
    // The rate the target drained the step at: its requests over the time to the last answer
    // less a typical request's own latency. Within capacity the last answer comes one latency
    // after the window and this is the offered rate; beyond it the backlog's drain time shows.
    // (Requests over the time to the last answer alone would fail every step whose latency is
    // a few percent of the step.)
    let typical = Duration::from_secs_f64(summary.latency_ms.as_ref().map_or(0.0, |l| l.p50 / 1000.0));
    let draining = result.elapsed.saturating_sub(typical).max(settings.step / 2);
    let completed = result.tally.requests() as f64 / draining.as_secs_f64();
    if offered > 0.0 && completed < offered * slo.min_throughput {
        because.push(format!(
            "completed {completed:.1}/s of {offered:.1}/s offered (under {})",
            slo.min_throughput
        ));
    }
    let step = Step {
        rate,
        offered_per_s: offered,
        achieved_per_s: summary.requests_per_s,
        latency_ms: summary.latency_ms,
        slo_latency_ms,
        goodput,
        passed: because.is_empty(),
        because,
        batch,
    };
    Ok((step, result.schedule.generator_behind))
}

/// A step as one line, for progress while a search runs.
fn step_line(n: usize, step: &Step) -> String {
    let slo = step.slo_latency_ms.map_or("—".to_owned(), |ms| format!("{ms:.1} ms"));
    let verdict = if step.passed { "pass".to_owned() } else { format!("fail: {}", step.because.join("; ")) };
    format!(
        "step {n}: {:.1} req/s offered, {:.1} completed, SLO latency {slo}, goodput {:.4} — {verdict}",
        step.rate, step.achieved_per_s, step.goodput
    )
}

/// The highest passing rate whose median stays within 1.5× the median at the lowest rate.
fn knee(steps: &[Step]) -> Option<f64> {
    let mut passing: Vec<(f64, f64)> = steps
        .iter()
        .filter(|s| s.passed)
        .filter_map(|s| s.latency_ms.as_ref().map(|l| (s.rate, l.p50)))
        .collect();
    passing.sort_by(|a, b| a.0.total_cmp(&b.0));
    let base = passing.first()?.1;
    passing.iter().take_while(|(_, p50)| *p50 <= base * 1.5).last().map(|(rate, _)| *rate)
}

/// The mean and its 95% confidence interval (Student's t; none below two values).
fn mean_ci(values: &[f64]) -> (Option<f64>, Option<(f64, f64)>) {
    if values.is_empty() {
        return (None, None);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (Some(mean), None);
    }
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // t(0.975, df) for df = 1..=10; about 2 beyond.
    const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    let t = T.get(values.len() - 2).copied().unwrap_or(2.0);
    let half = t * sd / n.sqrt();
    (Some(mean), Some((mean - half, mean + half)))
}

impl CapacityReport {
    /// Markdown for a terminal or BENCHMARKS.md.
    pub fn render(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let slo = &self.slo;
        let _ = writeln!(out, "## Capacity of {}\n", self.url);
        let _ = writeln!(
            out,
            "SLO: p{} {} ≤ {} ms and goodput ≥ {}\n",
            slo.quantile * 100.0,
            slo.metric.name(),
            slo.latency_ms,
            slo.min_goodput
        );
        for (i, search) in self.searches.iter().enumerate() {
            let _ = writeln!(
                out,
                "| search {} step | rate | achieved | p50 ms | SLO latency ms | goodput | |",
                i + 1
            );
            let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---|");
            for (n, step) in search.steps.iter().enumerate() {
                let p50 = step.latency_ms.as_ref().map_or("—".into(), |l| format!("{:.2}", l.p50));
                let slo_ms = step.slo_latency_ms.map_or("—".into(), |v| format!("{v:.2}"));
                let verdict = if step.passed {
                    "pass".to_owned()
                } else {
                    format!("fail: {}", step.because.join("; "))
                };
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {:.1} | {p50} | {slo_ms} | {:.4} | {verdict} |",
                    n + 1,
                    step.rate,
                    step.achieved_per_s,
                    step.goodput
                );
            }
            let found =
                search.capacity.map_or("none (the first step failed)".into(), |c| format!("{c:.1} req/s"));
            let knee = search.knee.map_or("—".into(), |k| format!("{k:.1} req/s"));
            let behind =
                if search.limited_by_generator { " (the generator fell behind: at least this)" } else { "" };
            let _ = writeln!(out, "\ncapacity {found}{behind}; knee {knee}\n");
        }
        match (self.capacity, self.ci95) {
            (Some(c), Some((lo, hi))) => {
                let _ = writeln!(
                    out,
                    "capacity: mean {c:.1} req/s, 95% CI [{lo:.1}, {hi:.1}] over {} searches",
                    self.searches.len()
                );
            }
            (Some(c), None) => {
                let _ = writeln!(out, "capacity: {c:.1} req/s");
            }
            _ => {
                let _ = writeln!(out, "capacity: not found");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, p50: f64, passed: bool) -> Step {
        let latency = Latency { mean: p50, p50, p90: p50, p99: p50, p999: p50, max: p50 };
        Step {
            rate,
            offered_per_s: rate,
            achieved_per_s: rate,
            latency_ms: Some(latency),
            slo_latency_ms: Some(p50),
            goodput: 1.0,
            passed,
            because: Vec::new(),
            batch: None,
        }
    }

    #[test]
    fn the_knee_is_where_the_median_leaves_its_low_load_level() {
        let steps = [
            step(100.0, 10.0, true),
            step(200.0, 11.0, true),
            step(400.0, 16.0, true),
            step(300.0, 12.0, true),
        ];
        assert_eq!(knee(&steps), Some(300.0), "16 ms is over 1.5 × 10 ms");
        assert_eq!(knee(&[step(100.0, 10.0, false)]), None);
    }

    #[test]
    fn progress_lines_name_the_verdict() {
        let line = step_line(3, &step(200.0, 12.5, true));
        assert_eq!(
            line,
            "step 3: 200.0 req/s offered, 200.0 completed, SLO latency 12.5 ms, goodput 1.0000 — pass"
        );
        let mut failed = step(400.0, 900.0, false);
        failed.because = vec!["p99 latency 900.0 ms is over 500 ms".into()];
        assert!(step_line(4, &failed).ends_with("— fail: p99 latency 900.0 ms is over 500 ms"));
    }

    #[test]
    fn confidence_intervals_follow_students_t() {
        assert_eq!(mean_ci(&[]), (None, None));
        assert_eq!(mean_ci(&[5.0]), (Some(5.0), None));
        let (mean, ci) = mean_ci(&[90.0, 100.0, 110.0]);
        assert_eq!(mean, Some(100.0));
        let (lo, hi) = ci.unwrap();
        // sd 10, n 3, t 4.303: half-width 24.84.
        assert!((hi - 100.0 - 24.84).abs() < 0.01 && (100.0 - lo - 24.84).abs() < 0.01, "{lo} {hi}");
    }

    #[test]
    fn stats_are_deltas_of_the_histograms() {
        let scrape = |v: [f64; 4]| METRICS.iter().map(|m| m.to_string()).zip(v).collect();
        let s = BatchStats::between(&scrape([10.0, 5.0, 0.5, 5.0]), &scrape([70.0, 15.0, 0.9, 15.0]));
        assert_eq!(s, Some(BatchStats { batches: 10.0, mean_size: 6.0, mean_execute_ms: 40.0 }));
        assert_eq!(BatchStats::between(&scrape([1.0; 4]), &scrape([1.0; 4])), None);
    }
}
