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
use crate::report::{KeptSchedule, Schedule, Tally};
use crate::request::{self, Target};
use crate::shard::Shard;

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
    /// Send only this shard's share of the schedule (`--shard i/N`).
    pub shard: Option<Shard>,
}

/// The outcome of an open-loop run: the tally of measured requests, the schedule it kept
/// (and what it was judged from, for merging shards), and the measured window (end of
/// warmup to the last measured response).
pub struct OpenResult {
    pub tally: Tally,
    pub schedule: Schedule,
    pub kept: KeptSchedule,
    pub elapsed: Duration,
}

/// Shared by the request tasks of one run.
struct Collector {
    tally: Tally,
    lag_us: Histogram,
    last_end: Option<Instant>,
}

/// A shard's arrivals of a schedule, numbered: the whole schedule is walked, so that the
/// bounds and each arrival's number (which seeds its scenario draw) are the unsharded
/// run's, and the arrivals whose number is the shard's index modulo the count come out.
struct Share<I> {
    times: std::iter::Zip<std::ops::RangeFrom<u64>, I>,
    shard: Shard,
    /// From the start: measured from here, none sent from `stop` (compared as durations,
    /// to the nanosecond, as the pacer's instants are).
    measure_from: Duration,
    stop: Option<Duration>,
    requests: Option<u64>,
    /// Measured arrivals of the whole schedule so far.
    measured: u64,
    done: bool,
}

impl<I: Iterator<Item = f64>> Share<I> {
    fn new(
        times: I,
        shard: Shard,
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
    ) -> Self {
        Share {
            times: (0u64..).zip(times),
            shard,
            measure_from: warmup,
            stop: duration.map(|d| warmup + d),
            requests,
            measured: 0,
            done: false,
        }
    }
}

impl<I: Iterator<Item = f64>> Iterator for Share<I> {
    type Item = (u64, Duration);

    fn next(&mut self) -> Option<(u64, Duration)> {
        while !self.done {
            let (number, offset) = self.times.next()?;
            let offset = Duration::from_secs_f64(offset);
            let over = self.stop.is_some_and(|stop| offset >= stop)
                || self.requests.is_some_and(|n| self.measured >= n);
            if over {
                // Nothing more comes (the schedule itself may be endless).
                self.done = true;
                return None;
            }
            self.measured += u64::from(offset >= self.measure_from);
            if self.shard.owns(number) {
                return Some((number, offset));
            }
        }
        None
    }
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
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, u64)>();
    let shard = settings.shard.unwrap_or(Shard { index: 0, count: 1 });
    let pacer = {
        let start = start.into_std();
        let mut due = Share::new(
            schedule(settings.arrivals, settings.shape, settings.replay.clone()),
            shard,
            warmup,
            duration,
            requests,
        );
        std::thread::Builder::new().name("infergate-load-pacer".into()).spawn(move || {
            for (number, offset) in due.by_ref() {
                let due = start + offset;
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send((Instant::from_std(due), number)).is_err() {
                    break;
                }
            }
            due.measured
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
    while let Some((due, number)) = rx.recv().await {
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
            let sent = target.send(&client, timeout, due.into_std(), Some(number)).await;
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
    let whole = pacer.join().unwrap_or(scheduled);
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
    // The offered rate over the window the arrivals were scheduled in (the whole
    // schedule's, so that every shard has the same window).
    let window = match stop_at {
        Some(stop) => stop.saturating_duration_since(measure_from),
        None => Duration::from_secs_f64(whole as f64 / settings.arrivals.rate()),
    };
    let kept = KeptSchedule {
        lag_us: collector.lag_us,
        scheduled,
        window_s: window.as_secs_f64(),
        skipped,
        max_lag_ms: settings.max_lag.as_secs_f64() * 1000.0,
        max_in_flight: settings.max_in_flight,
    };
    Ok(OpenResult { tally: collector.tally, schedule: kept.judge(), kept, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_together_send_the_unsharded_schedule() {
        let poisson = || schedule(Arrivals::Poisson { rate: 500.0, seed: 3 }, Shape::Flat, None);
        // Bounded by a duration (1 s of warmup, 2 s measured) and by a number of requests.
        const SECOND: Duration = Duration::from_secs(1);
        let ms = Duration::from_millis;
        for (duration, requests) in [(Some(ms(2000)), None), (None, Some(777)), (Some(ms(500)), Some(10_000))]
        {
            let whole = || Share::new(poisson(), Shard { index: 0, count: 1 }, SECOND, duration, requests);
            let unsharded: Vec<(u64, Duration)> = whole().collect();
            let mut together = Vec::new();
            for index in 0..4 {
                let mut share = Share::new(poisson(), Shard { index, count: 4 }, SECOND, duration, requests);
                let sent: Vec<(u64, Duration)> = share.by_ref().collect();
                assert!(sent.iter().all(|(n, _)| n % 4 == u64::from(index)), "shard {index} sends its own");
                let mut all = whole();
                all.by_ref().for_each(drop);
                assert_eq!(share.measured, all.measured, "every shard counts the whole schedule's arrivals");
                together.extend(sent);
            }
            together.sort_by_key(|(n, _)| *n);
            assert_eq!(together, unsharded, "{duration:?} {requests:?}");
            assert!(unsharded.len() > 100);
        }
    }
}
