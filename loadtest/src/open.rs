//! The open-loop runner: requests leave at the instants an arrival process sets, whether or
//! not earlier ones have been answered, so a slow server cannot slow the load down and hide
//! its own queueing. Each latency runs from the request's *intended* send time (no
//! coordinated omission). A pacer thread keeps the schedule with the OS's sub-millisecond
//! sleeps (tokio's timer has a 1 ms grain); the generator measures its own schedule lag —
//! actual minus intended send time — and marks the run invalid when it falls behind. The
//! schedule itself comes from [`crate::arrivals`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::arrivals::{schedule, Arrivals, Shape};
use crate::histogram::Histogram;
use crate::report::{Latency, Schedule, Tally};
use crate::request::{self, Target};

/// How far ahead of the call the pacer starts, so the first arrivals are not already late;
/// the measured window starts this plus the warmup after the call.
pub const HEAD_START: Duration = Duration::from_millis(20);

/// An open-loop run's settings besides the target and bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLoop {
    pub arrivals: Arrivals,
    /// How the rate changes over the run.
    pub shape: Shape,
    /// Recorded arrival times to send at instead (seconds; `arrivals` and `shape` unused).
    pub replay: Option<Arc<[f64]>>,
    /// Requests in flight at most; an arrival beyond it is not sent and the run is invalid
    /// (the server is so far behind that the load no longer measures it).
    pub max_in_flight: usize,
    /// The schedule-lag p99 above which the run is invalid.
    pub max_lag: Duration,
    /// Keep-alive connections the client may hold.
    pub connections: usize,
    /// Print a progress line to stderr every second (rate, p99, errors).
    pub progress: bool,
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
        settings.replay.is_some() || (settings.arrivals.rate().is_finite() && settings.arrivals.rate() > 0.0),
        "the arrival rate must be positive"
    );
    anyhow::ensure!(
        duration.is_some() || requests.is_some(),
        "a run needs a duration or a number of requests"
    );
    let start = Instant::now() + HEAD_START;
    let measure_from = start + warmup;
    let stop_at = duration.map(|d| measure_from + d);
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = {
        let start = start.into_std();
        let times = schedule(settings.arrivals, settings.shape, settings.replay.clone());
        let (measure_from, stop_at) = (measure_from.into_std(), stop_at.map(Instant::into_std));
        std::thread::Builder::new().name("infergate-load-pacer".into()).spawn(move || {
            let mut measured = 0u64;
            for offset in times {
                let due = start + Duration::from_secs_f64(offset);
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
            }
        })?
    };

    let client = if target.http2 {
        request::client_h2(&target.tls)
    } else {
        request::client_with(&target.tls, settings.connections)
    };
    let collector = Arc::new(Mutex::new(Collector {
        tally: Tally::default(),
        lag_us: Histogram::default(),
        last_end: None,
    }));
    let (mut tasks, mut skipped, mut scheduled) = (JoinSet::new(), 0u64, 0u64);
    let target = Arc::new(target);
    let live = settings.progress.then(|| Arc::new(crate::progress::Live::default()));
    let progress = live.clone().map(|live| live.show(measure_from));
    while let Some(due) = rx.recv().await {
        while tasks.try_join_next().is_some() {}
        let measured = due >= measure_from;
        scheduled += u64::from(measured);
        if tasks.len() >= settings.max_in_flight {
            skipped += u64::from(measured);
            continue;
        }
        let (client, target, collector, live) =
            (client.clone(), target.clone(), collector.clone(), live.clone());
        tasks.spawn(async move {
            let lag = Instant::now().saturating_duration_since(due);
            let sent = target.send(&client, timeout, due.into_std()).await;
            let end = Instant::now();
            if measured {
                if let Some(live) = &live {
                    live.record(sent.outcome.is_success(), sent.latency);
                }
                let mut c = collector.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                c.tally.record_sent(sent, due.saturating_duration_since(measure_from));
                c.lag_us.record(u64::try_from(lag.as_micros()).unwrap_or(u64::MAX));
                c.last_end = c.last_end.max(Some(end));
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let _ = pacer.join();
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }

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
