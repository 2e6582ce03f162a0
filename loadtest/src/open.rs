//! The open-loop runner: requests leave at the instants an arrival process sets, whether or
//! not earlier ones have been answered, so a slow server cannot slow the load down and hide
//! its own queueing. Each latency runs from the request's *intended* send time (no
//! coordinated omission). A pacer thread keeps the schedule with the OS's sub-millisecond
//! sleeps (tokio's timer has a 1 ms grain); the generator measures its own schedule lag —
//! actual minus intended send time — and marks the run invalid when it falls behind.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::report::{Latency, Tally};
use crate::request::{self, Target};

/// When requests arrive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced, `rate` per second.
    Constant { rate: f64 },
    /// A Poisson process of `rate` per second: exponential gaps, from a seeded generator so
    /// that runs repeat.
    Poisson { rate: f64, seed: u64 },
}

impl Arrivals {
    pub fn rate(&self) -> f64 {
        match *self {
            Arrivals::Constant { rate } | Arrivals::Poisson { rate, .. } => rate,
        }
    }

    /// The gaps between arrivals, in order.
    fn gaps(self) -> impl Iterator<Item = Duration> {
        let mut state = match self {
            Arrivals::Poisson { seed, .. } => seed | 1,
            Arrivals::Constant { .. } => 0,
        };
        std::iter::from_fn(move || {
            let mean = 1.0 / self.rate();
            let gap = match self {
                Arrivals::Constant { .. } => mean,
                Arrivals::Poisson { .. } => -mean * (1.0 - uniform(&mut state)).ln(),
            };
            Some(Duration::from_secs_f64(gap))
        })
    }
}

/// A uniform draw in [0, 1) (splitmix64).
fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

/// An open-loop run's settings besides the target and bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpenLoop {
    pub arrivals: Arrivals,
    /// Requests in flight at most; an arrival beyond it is not sent and the run is invalid
    /// (the server is so far behind that the load no longer measures it).
    pub max_in_flight: usize,
    /// The schedule-lag p99 above which the run is invalid.
    pub max_lag: Duration,
    /// Keep-alive connections the client may hold.
    pub connections: usize,
}

/// What an open-loop run adds to the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    /// Arrivals scheduled in the measured window, per second of it.
    pub offered_per_s: f64,
    /// Actual minus intended send time of the measured requests.
    pub lag_ms: Option<Latency>,
    /// Arrivals not sent because `max_in_flight` requests were outstanding.
    pub skipped: u64,
    /// The generator itself fell behind its schedule (lag over `max_lag`).
    pub generator_behind: bool,
    /// Whether the run measured the target: the generator kept its schedule and never hit
    /// its in-flight cap; when not, why.
    pub valid: bool,
    pub invalid_because: Vec<String>,
}

/// The outcome of an open-loop run: the tally of measured requests, the schedule it kept,
/// and the measured window (end of warmup to the last measured response).
pub struct OpenResult {
    pub tally: Tally,
    pub schedule: Schedule,
    pub elapsed: Duration,
}

/// Shared by the request tasks of one run.
struct Collector {
    tally: Tally,
    lag_us: Histogram,
    last_end: Option<Instant>,
}

/// Send `target` on `settings.arrivals` from now until `duration` past `warmup` (or
/// `requests` measured arrivals, whichever comes first), then wait for what is in flight.
pub async fn run(
    target: Target,
    settings: OpenLoop,
    warmup: Duration,
    duration: Option<Duration>,
    requests: Option<u64>,
    timeout: Duration,
) -> anyhow::Result<OpenResult> {
    anyhow::ensure!(
        settings.arrivals.rate().is_finite() && settings.arrivals.rate() > 0.0,
        "the arrival rate must be positive"
    );
    anyhow::ensure!(
        duration.is_some() || requests.is_some(),
        "a run needs a duration or a number of requests"
    );
    // The pacer starts a little ahead, so the first arrivals are not already late.
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let stop_at = duration.map(|d| measure_from + d);
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = {
        let (start, gaps) = (start.into_std(), settings.arrivals.gaps());
        let (measure_from, stop_at) = (measure_from.into_std(), stop_at.map(Instant::into_std));
        std::thread::Builder::new().name("infergate-load-pacer".into()).spawn(move || {
            let mut due = start;
            let mut measured = 0u64;
            for gap in gaps {
                if stop_at.is_some_and(|stop| due >= stop) || requests.is_some_and(|n| measured >= n) {
                    break;
                }
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(Instant::from_std(due)).is_err() {
                    break;
                }
                measured += u64::from(due >= measure_from);
                due += gap;
            }
        })?
    };

    let client = request::client_with(settings.connections);
    let collector = Arc::new(Mutex::new(Collector {
        tally: Tally::default(),
        lag_us: Histogram::default(),
        last_end: None,
    }));
    let (mut tasks, mut skipped, mut scheduled) = (JoinSet::new(), 0u64, 0u64);
    let target = Arc::new(target);
    while let Some(due) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        let measured = due >= measure_from;
        scheduled += u64::from(measured);
        if tasks.len() >= settings.max_in_flight {
            skipped += u64::from(measured);
            continue;
        }
        let (client, target, collector) = (client.clone(), target.clone(), collector.clone());
        tasks.spawn(async move {
            let lag = Instant::now().saturating_duration_since(due);
            let (outcome, _) = target.send(&client, timeout).await;
            let end = Instant::now();
            if measured {
                let mut c = collector.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                c.tally.record(outcome, end.saturating_duration_since(due));
                c.lag_us.record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
                c.last_end = c.last_end.max(Some(end));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = pacer.join();

    let collector = std::mem::replace(
        &mut *collector.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        Collector { tally: Tally::default(), lag_us: Histogram::default(), last_end: None },
    );
    let elapsed =
        collector.last_end.map_or(Duration::ZERO, |end| end.saturating_duration_since(measure_from));
    // The offered rate over the window the arrivals were scheduled in.
    let window = match stop_at {
        Some(stop) => stop.saturating_duration_since(measure_from),
        None => Duration::from_secs_f64(scheduled as f64 / settings.arrivals.rate()),
    };
    let lag_ms = Latency::of(&collector.lag_us);
    let mut invalid_because = Vec::new();
    let generator_behind =
        lag_ms.as_ref().is_some_and(|lag| lag.p99 > settings.max_lag.as_secs_f64() * 1000.0);
    if let Some(lag) = &lag_ms {
        if generator_behind {
            invalid_because.push(format!(
                "schedule lag p99 {:.3} ms is over --max-lag {} ms",
                lag.p99,
                settings.max_lag.as_secs_f64() * 1000.0
            ));
        }
    }
    if skipped > 0 {
        invalid_because.push(format!(
            "{skipped} arrivals not sent: {} requests were in flight (--max-in-flight)",
            settings.max_in_flight
        ));
    }
    let schedule = Schedule {
        offered_per_s: if window.is_zero() { 0.0 } else { scheduled as f64 / window.as_secs_f64() },
        lag_ms,
        skipped,
        generator_behind,
        valid: invalid_because.is_empty(),
        invalid_because,
    };
    Ok(OpenResult { tally: collector.tally, schedule, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let gaps: Vec<Duration> = Arrivals::Constant { rate: 200.0 }.gaps().take(3).collect();
        assert_eq!(gaps, vec![Duration::from_millis(5); 3]);
    }

    #[test]
    fn poisson_gaps_have_the_rate_and_spread_of_an_exponential() {
        let n = 200_000;
        let gaps: Vec<f64> =
            Arrivals::Poisson { rate: 1000.0, seed: 7 }.gaps().take(n).map(|g| g.as_secs_f64()).collect();
        let mean = gaps.iter().sum::<f64>() / n as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.001).abs() < 0.00002, "mean gap {mean}");
        // An exponential's standard deviation equals its mean.
        assert!((var.sqrt() - 0.001).abs() < 0.00003, "sd {}", var.sqrt());
        let again: Vec<f64> =
            Arrivals::Poisson { rate: 1000.0, seed: 7 }.gaps().take(5).map(|g| g.as_secs_f64()).collect();
        assert_eq!(&gaps[..5], &again[..], "a seed repeats its schedule");
    }
}
