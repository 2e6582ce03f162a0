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

/// The arrival process: how arrivals are spaced around the current rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Arrivals {
    /// Evenly spaced, `rate` per second.
    Constant { rate: f64 },
    /// A Poisson process of `rate` per second: exponential gaps, from a seeded generator so
    /// that runs repeat.
    Poisson { rate: f64, seed: u64 },
    /// Gamma-distributed gaps of mean `1 / rate` and coefficient of variation `cv`: `cv` 1 is
    /// Poisson, above 1 bursty (arrivals cluster), below 1 more regular.
    Gamma { rate: f64, cv: f64, seed: u64 },
}

impl Arrivals {
    pub fn rate(&self) -> f64 {
        match *self {
            Arrivals::Constant { rate } | Arrivals::Poisson { rate, .. } | Arrivals::Gamma { rate, .. } => {
                rate
            }
        }
    }

    /// The same process at another base rate.
    pub fn with_rate(self, rate: f64) -> Self {
        match self {
            Arrivals::Constant { .. } => Arrivals::Constant { rate },
            Arrivals::Poisson { seed, .. } => Arrivals::Poisson { rate, seed },
            Arrivals::Gamma { cv, seed, .. } => Arrivals::Gamma { rate, cv, seed },
        }
    }

    /// The same process with its seed mixed with `salt`: the steps of a search each get
    /// their own random schedule rather than one schedule scaled (whose early draws would
    /// bias every step the same way).
    pub fn reseeded(self, salt: u64) -> Self {
        let mix = |seed: u64| {
            let mut state = seed ^ salt.rotate_left(17);
            (uniform(&mut state) * u64::MAX as f64) as u64
        };
        match self {
            Arrivals::Constant { .. } => self,
            Arrivals::Poisson { rate, seed } => Arrivals::Poisson { rate, seed: mix(seed) },
            Arrivals::Gamma { rate, cv, seed } => Arrivals::Gamma { rate, cv, seed: mix(seed) },
        }
    }

    /// One gap at `rate` per second.
    fn gap(&self, rate: f64, state: &mut u64) -> f64 {
        let mean = 1.0 / rate;
        match *self {
            Arrivals::Constant { .. } => mean,
            Arrivals::Poisson { .. } => -mean * (1.0 - uniform(state)).ln(),
            Arrivals::Gamma { cv, .. } => {
                // Shape k = 1/cv², scale θ = mean·cv², so the mean is kθ and sd/mean is cv.
                let k = 1.0 / (cv * cv);
                gamma(k, state) * mean * cv * cv
            }
        }
    }

    fn seed(&self) -> u64 {
        match *self {
            Arrivals::Constant { .. } => 1,
            Arrivals::Poisson { seed, .. } | Arrivals::Gamma { seed, .. } => seed | 1,
        }
    }
}

/// How the rate changes over the run (from the first arrival, warmup included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Shape {
    /// The base rate throughout.
    Flat,
    /// From the base rate to `to` linearly over `over_s`, then `to`.
    Ramp { to: f64, over_s: f64 },
    /// The base rate, plus `by` every `every_s` seconds.
    Steps { by: f64, every_s: f64 },
    /// The base rate for `on_s` seconds, then nothing for `off_s`, repeated.
    OnOff { on_s: f64, off_s: f64 },
}

impl Shape {
    /// The rate at `t` seconds, `None` while silent (an off period).
    fn rate_at(&self, base: f64, t: f64) -> Option<f64> {
        match *self {
            Shape::Flat => Some(base),
            Shape::Ramp { to, over_s } => {
                Some(if t >= over_s { to } else { base + (to - base) * t / over_s })
            }
            Shape::Steps { by, every_s } => Some(base + by * (t / every_s).floor()),
            Shape::OnOff { on_s, off_s } => (t % (on_s + off_s) < on_s).then_some(base),
        }
        .filter(|r| *r > 0.0)
    }

    /// When the next period with a rate starts, from a silent `t`.
    fn next_on(&self, t: f64) -> f64 {
        match *self {
            Shape::OnOff { on_s, off_s } => ((t / (on_s + off_s)).floor() + 1.0) * (on_s + off_s),
            // A ramp down to zero or negative steps: nothing more comes.
            _ => f64::INFINITY,
        }
    }
}

/// Arrival times in seconds from the start: the process around the shape's rate, or a
/// recorded trace's times as they were.
pub fn schedule(
    arrivals: Arrivals,
    shape: Shape,
    replay: Option<Arc<[f64]>>,
) -> Box<dyn Iterator<Item = f64> + Send> {
    if let Some(times) = replay {
        let first = times.first().copied().unwrap_or(0.0);
        return Box::new((0..times.len()).map(move |i| times[i] - first));
    }
    let mut state = arrivals.seed();
    let mut t = 0.0;
    Box::new(std::iter::from_fn(move || {
        let now = t;
        let rate = loop {
            match shape.rate_at(arrivals.rate(), t) {
                Some(rate) => break rate,
                None => {
                    t = shape.next_on(t);
                    if !t.is_finite() {
                        return None;
                    }
                }
            }
        };
        let due = if t > now { t } else { now };
        t = due + arrivals.gap(rate, &mut state);
        Some(due)
    }))
}

/// Arrival times from a recorded trace: one per line, seconds (the first column of a CSV);
/// unsorted input is sorted. Blank lines, `#` comments and a header row are skipped.
pub fn parse_replay(text: &str) -> anyhow::Result<Arc<[f64]>> {
    let mut times = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let field = line.split(',').next().unwrap_or("").trim();
        if field.is_empty() || (n == 0 && field.parse::<f64>().is_err()) {
            continue;
        }
        let t: f64 =
            field.parse().map_err(|_| anyhow::anyhow!("replay line {}: not a time: {field:?}", n + 1))?;
        anyhow::ensure!(t.is_finite() && t >= 0.0, "replay line {}: times are seconds >= 0", n + 1);
        times.push(t);
    }
    anyhow::ensure!(!times.is_empty(), "the replay file has no arrival times");
    times.sort_by(f64::total_cmp);
    Ok(times.into())
}

/// A standard normal draw (Box–Muller).
pub(crate) fn normal(state: &mut u64) -> f64 {
    let u1 = 1.0 - uniform(state);
    let u2 = uniform(state);
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A Gamma(k, 1) draw (Marsaglia–Tsang; k < 1 boosted by U^(1/k)).
fn gamma(k: f64, state: &mut u64) -> f64 {
    if k < 1.0 {
        let u = 1.0 - uniform(state);
        return gamma(k + 1.0, state) * u.powf(1.0 / k);
    }
    let d = k - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(state);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = 1.0 - uniform(state);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A uniform draw in [0, 1) (splitmix64).
pub(crate) fn uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) as f64 / (u64::MAX as f64 + 1.0)
}

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

    let client = if target.http2 { request::client_h2() } else { request::client_with(settings.connections) };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn gaps(arrivals: Arrivals, n: usize) -> Vec<f64> {
        let times: Vec<f64> = schedule(arrivals, Shape::Flat, None).take(n + 1).collect();
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    fn mean_sd(values: &[f64]) -> (f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        (mean, (values.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n).sqrt())
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let gaps = gaps(Arrivals::Constant { rate: 200.0 }, 3);
        assert!(gaps.iter().all(|g| (g - 0.005).abs() < 1e-12), "{gaps:?}");
    }

    #[test]
    fn poisson_gaps_have_the_rate_and_spread_of_an_exponential() {
        let all = gaps(Arrivals::Poisson { rate: 1000.0, seed: 7 }, 200_000);
        let (mean, sd) = mean_sd(&all);
        assert!((mean - 0.001).abs() < 0.00002, "mean gap {mean}");
        // An exponential's standard deviation equals its mean.
        assert!((sd - 0.001).abs() < 0.00003, "sd {sd}");
        assert_eq!(all[..5], gaps(Arrivals::Poisson { rate: 1000.0, seed: 7 }, 5)[..], "a seed repeats");
    }

    #[test]
    fn gamma_gaps_have_the_asked_mean_and_burstiness() {
        for cv in [0.5, 1.0, 3.0] {
            let all = gaps(Arrivals::Gamma { rate: 500.0, cv, seed: 11 }, 200_000);
            let (mean, sd) = mean_sd(&all);
            assert!((mean - 0.002).abs() / 0.002 < 0.03, "cv {cv}: mean gap {mean}");
            assert!((sd / mean - cv).abs() / cv < 0.05, "cv {cv}: got {}", sd / mean);
        }
    }

    #[test]
    fn shapes_change_the_rate_over_time() {
        let count = |shape: Shape, from: f64, to: f64| {
            schedule(Arrivals::Constant { rate: 100.0 }, shape, None)
                .take_while(|t| *t < to)
                .filter(|t| *t >= from)
                .count()
        };
        // A ramp from 100/s to 300/s over 10 s: 200/s on average, then 300/s.
        let ramp = Shape::Ramp { to: 300.0, over_s: 10.0 };
        assert!((1990..=2010).contains(&count(ramp, 0.0, 10.0)), "{}", count(ramp, 0.0, 10.0));
        assert!((299..=301).contains(&count(ramp, 10.0, 11.0)));
        let steps = Shape::Steps { by: 50.0, every_s: 2.0 };
        assert_eq!((count(steps, 0.0, 2.0), count(steps, 2.0, 4.0), count(steps, 4.0, 6.0)), (200, 300, 400));
        let on_off = Shape::OnOff { on_s: 1.0, off_s: 3.0 };
        assert_eq!((count(on_off, 0.0, 1.0), count(on_off, 1.0, 4.0)), (100, 0));
        assert!((100..=101).contains(&count(on_off, 4.0, 5.0)), "the next burst (float sums may add one)");
        let down = Shape::Ramp { to: 0.0, over_s: 1.0 };
        assert!(
            schedule(Arrivals::Constant { rate: 100.0 }, down, None).count() < 100,
            "a ramp to zero ends"
        );
    }

    #[test]
    fn replays_send_the_recorded_times() {
        let times = parse_replay("time_s,path\n# recorded\n10.5,/a\n10.0,/b\n\n12.25\n").unwrap();
        let sent: Vec<f64> = schedule(Arrivals::Constant { rate: 1.0 }, Shape::Flat, Some(times)).collect();
        assert_eq!(sent, vec![0.0, 0.5, 2.25]);
        assert!(parse_replay("").is_err());
        assert!(parse_replay("1\nsoon\n").is_err());
        assert!(parse_replay("-1\n").is_err());
    }
}
