//! Statistics of a run and their output: per-worker [`Tally`]s merge into a [`Summary`], which
//! renders as markdown for people and serializes as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::arrivals::{Arrivals, Shape};
use crate::histogram::Histogram;
use crate::request::{ErrorKind, Outcome, Sent};

/// One second of a run, by when its requests were sent (were due, in an open loop).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
struct Second {
    requests: u64,
    successes: u64,
    latency_us: Histogram,
    ttft_us: Histogram,
}

/// What one worker saw; workers merge theirs at the end of a run. A report carries the
/// run's tally (its `raw` part), so that the reports of shards merge exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct Tally {
    requests: u64,
    successes: u64,
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<ErrorKind, u64>,
    first_error: BTreeMap<ErrorKind, String>,
    /// Latency of 2xx responses, in microseconds.
    latency_us: Histogram,
    /// Streamed 2xx answers: time to first token, between tokens, per output token after
    /// the first; and the gateway's queue time from its response header.
    ttft_us: Histogram,
    itl_us: Histogram,
    tpot_us: Histogram,
    queue_us: Histogram,
    output_tokens: u64,
    seconds: Vec<Second>,
    /// Per scenario entry, when the requests come from a scenario file.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    by_scenario: BTreeMap<std::sync::Arc<str>, Tally>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Tally {
    /// Records one measured request, sent `sent` into the measured window. Latency, token
    /// times and queue time count only for 2xx responses, so that fast rejections under
    /// overload do not flatter the numbers.
    pub fn record(&mut self, outcome: Outcome, latency: Duration, sent: Duration) {
        self.requests += 1;
        let index = usize::try_from(sent.as_secs()).unwrap_or(usize::MAX).min(1 << 20);
        if self.seconds.len() <= index {
            self.seconds.resize_with(index + 1, Second::default);
        }
        let second = &mut self.seconds[index];
        second.requests += 1;
        match outcome {
            Outcome::Response { status, queue_ms, stream } if (200..300).contains(&status) => {
                self.successes += 1;
                second.successes += 1;
                self.latency_us.record(micros(latency));
                second.latency_us.record(micros(latency));
                if let Some(ms) = queue_ms.filter(|ms| *ms >= 0.0) {
                    self.queue_us.record((ms * 1000.0) as u64);
                }
                if let Some(stream) = stream {
                    if let Some(first) = stream.first_token {
                        self.ttft_us.record(micros(first));
                        second.ttft_us.record(micros(first));
                    }
                    stream.gaps.iter().for_each(|gap| self.itl_us.record(micros(*gap)));
                    if let Some(per_token) = stream.per_token() {
                        self.tpot_us.record(micros(per_token));
                    }
                    self.output_tokens += stream.tokens;
                }
            }
            Outcome::Response { status, .. } => *self.by_status.entry(status).or_default() += 1,
            Outcome::Error { kind, detail } => {
                *self.by_kind.entry(kind).or_default() += 1;
                self.first_error.entry(kind).or_insert(detail);
            }
        }
    }

    /// Records a request's result, under its scenario entry too when it has one.
    pub fn record_sent(&mut self, sent: Sent, at: Duration) {
        if let Some(name) = sent.scenario {
            self.by_scenario.entry(name).or_default().record(
                sent.outcome.clone(),
                sent.latency,
                Duration::ZERO,
            );
        }
        self.record(sent.outcome, sent.latency, at);
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: Tally) {
        for (name, tally) in other.by_scenario {
            self.by_scenario.entry(name).or_default().merge(tally);
        }
        self.requests += other.requests;
        self.successes += other.successes;
        for (status, n) in other.by_status {
            *self.by_status.entry(status).or_default() += n;
        }
        for (kind, n) in other.by_kind {
            *self.by_kind.entry(kind).or_default() += n;
        }
        for (kind, detail) in other.first_error {
            self.first_error.entry(kind).or_insert(detail);
        }
        self.latency_us.merge(&other.latency_us);
        self.ttft_us.merge(&other.ttft_us);
        self.itl_us.merge(&other.itl_us);
        self.tpot_us.merge(&other.tpot_us);
        self.queue_us.merge(&other.queue_us);
        self.output_tokens += other.output_tokens;
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), Second::default);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(other.seconds) {
            mine.requests += theirs.requests;
            mine.successes += theirs.successes;
            mine.latency_us.merge(&theirs.latency_us);
            mine.ttft_us.merge(&theirs.ttft_us);
        }
    }

    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// 2xx responses within `limit` of `metric` (to the histogram's resolution, under 0.8%);
    /// for time to first token, streamed answers only.
    pub fn successes_within(&self, metric: Metric, limit: Duration) -> u64 {
        self.histogram(metric).count_at_most(micros(limit))
    }

    /// The `q`-quantile of `metric` over 2xx responses, in milliseconds.
    pub fn quantile_ms(&self, metric: Metric, q: f64) -> Option<f64> {
        self.histogram(metric).quantile(q).map(|us| us as f64 / 1000.0)
    }

    fn histogram(&self, metric: Metric) -> &Histogram {
        match metric {
            Metric::Latency => &self.latency_us,
            Metric::Ttft => &self.ttft_us,
        }
    }

    /// The statistics of this tally over a measured `elapsed` time.
    pub fn summarize(&self, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64();
        let p = |h: &Histogram, q| h.quantile(q).map(|us| us as f64 / 1000.0);
        let timeline = self
            .seconds
            .iter()
            .enumerate()
            .map(|(t, s)| Moment {
                t_s: t as u64,
                requests: s.requests,
                successes: s.successes,
                p50_ms: p(&s.latency_us, 0.5),
                p99_ms: p(&s.latency_us, 0.99),
                ttft_p99_ms: p(&s.ttft_us, 0.99),
            })
            .collect();
        Summary {
            requests: self.requests,
            duration_s: secs,
            requests_per_s: if secs > 0.0 { self.requests as f64 / secs } else { 0.0 },
            successes: self.successes,
            errors: self.requests - self.successes,
            errors_by_status: self.by_status.clone(),
            errors_by_kind: self.by_kind.clone(),
            first_error: self.first_error.clone(),
            latency_ms: Latency::of(&self.latency_us),
            ttft_ms: Latency::of(&self.ttft_us),
            itl_ms: Latency::of(&self.itl_us),
            tpot_ms: Latency::of(&self.tpot_us),
            output_tokens: self.output_tokens,
            queue_ms: Latency::of(&self.queue_us),
            queue_ms_responses: self.queue_us.count(),
            timeline,
            scraped: Vec::new(),
            schedule: None,
            scenarios: self
                .by_scenario
                .iter()
                .map(|(name, tally)| {
                    let mut summary = tally.summarize(elapsed);
                    summary.timeline.clear();
                    (name.to_string(), summary)
                })
                .collect(),
        }
    }
}

/// What an SLO's latency is measured on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// From sending (in an open loop: from when due) to the end of the response.
    #[default]
    Latency,
    /// To the first generated token of a streamed answer.
    Ttft,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Latency => "latency",
            Metric::Ttft => "TTFT",
        }
    }
}

/// One second of the run in the summary.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moment {
    /// Seconds into the measured window.
    pub t_s: u64,
    pub requests: u64,
    pub successes: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_p99_ms: Option<f64>,
}

/// The target's own metrics, scraped from its Prometheus endpoint during the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scrape {
    /// Seconds into the measured window (negative during warmup), on the generator's clock.
    pub t_s: f64,
    /// Each scraped metric, summed over its series.
    pub values: BTreeMap<String, f64>,
}

impl Latency {
    /// The statistics of a histogram of microseconds, in milliseconds; `None` when empty.
    pub fn of(histogram: &Histogram) -> Option<Latency> {
        let ms = |us: u64| us as f64 / 1000.0;
        histogram.max().map(|max| Latency {
            mean: histogram.mean().unwrap_or_default() / 1000.0,
            p50: ms(histogram.quantile(0.5).unwrap_or_default()),
            p90: ms(histogram.quantile(0.9).unwrap_or_default()),
            p99: ms(histogram.quantile(0.99).unwrap_or_default()),
            p999: ms(histogram.quantile(0.999).unwrap_or_default()),
            max: ms(max),
        })
    }
}

/// Latency of 2xx responses in milliseconds, from sending the request (in open loop: from
/// when it was due) to the end of its body.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The statistics of the measured part of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub requests: u64,
    /// From the end of warmup to the end of the last measured response.
    pub duration_s: f64,
    pub requests_per_s: f64,
    /// Responses with a 2xx status.
    pub successes: u64,
    pub errors: u64,
    pub errors_by_status: BTreeMap<u16, u64>,
    pub errors_by_kind: BTreeMap<ErrorKind, u64>,
    /// The first error message seen of each kind.
    pub first_error: BTreeMap<ErrorKind, String>,
    /// `None` when no request succeeded.
    pub latency_ms: Option<Latency>,
    /// Streamed answers: time to first token, inter-token latency, time per output token
    /// after the first, and the tokens generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub itl_ms: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpot_ms: Option<Latency>,
    pub output_tokens: u64,
    /// The gateway's queue wait (`x-infergate-queue-ms`) over the 2xx responses carrying it.
    pub queue_ms: Option<Latency>,
    pub queue_ms_responses: u64,
    /// Per second of the measured window, by send time.
    pub timeline: Vec<Moment>,
    /// The target's `/metrics`, when `--metrics-url` was given.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scraped: Vec<Scrape>,
    /// Per scenario entry (with `--scenario`), each over the same window.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub scenarios: BTreeMap<String, Summary>,
    /// Open loop only: the offered rate and how well the generator kept its schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
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

/// What an open-loop run's [`Schedule`] is judged from; shards' add up.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct KeptSchedule {
    /// Actual minus intended send time of the measured requests, in microseconds.
    pub lag_us: Histogram,
    /// Measured arrivals this run was to send.
    pub scheduled: u64,
    /// The window they were scheduled in.
    pub window_s: f64,
    pub skipped: u64,
    pub max_lag_ms: f64,
    pub max_in_flight: usize,
}

impl KeptSchedule {
    /// The offered rate, and whether the generator kept its schedule.
    pub fn judge(&self) -> Schedule {
        let lag_ms = Latency::of(&self.lag_us);
        let mut invalid_because = Vec::new();
        let generator_behind = lag_ms.as_ref().is_some_and(|lag| lag.p99 > self.max_lag_ms);
        if let (Some(lag), true) = (&lag_ms, generator_behind) {
            invalid_because
                .push(format!("schedule lag p99 {:.3} ms is over --max-lag {} ms", lag.p99, self.max_lag_ms));
        }
        if self.skipped > 0 {
            invalid_because.push(format!(
                "{} arrivals not sent: {} requests were in flight (--max-in-flight)",
                self.skipped, self.max_in_flight
            ));
        }
        Schedule {
            offered_per_s: if self.window_s > 0.0 { self.scheduled as f64 / self.window_s } else { 0.0 },
            lag_ms,
            skipped: self.skipped,
            generator_behind,
            valid: invalid_because.is_empty(),
            invalid_because,
        }
    }

    /// Adds another shard's.
    pub fn merge(&mut self, other: &KeptSchedule) {
        self.lag_us.merge(&other.lag_us);
        self.scheduled += other.scheduled;
        self.window_s = self.window_s.max(other.window_s);
        self.skipped += other.skipped;
        self.max_lag_ms = self.max_lag_ms.min(other.max_lag_ms);
        self.max_in_flight = self.max_in_flight.max(other.max_in_flight);
    }
}

/// What a report carries besides its summary so that shards' reports merge exactly: the
/// run's tally, its measured window, and an open loop's kept schedule.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Raw {
    pub tally: Tally,
    pub elapsed_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<KeptSchedule>,
}

impl Raw {
    /// The summary these samples make.
    pub fn summarize(&self) -> Summary {
        let mut summary = self.tally.summarize(Duration::from_secs_f64(self.elapsed_s.max(0.0)));
        summary.schedule = self.schedule.as_ref().map(KeptSchedule::judge);
        summary
    }
}

/// How a run was configured, echoed in its output so that results are self-describing.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Params {
    /// Load model: `closed-loop` or `open-loop`.
    pub mode: std::borrow::Cow<'static, str>,
    pub method: String,
    pub url: String,
    /// `HTTP/1.1` or `HTTP/2` (h2c).
    pub protocol: std::borrow::Cow<'static, str>,
    /// The scenario file's entries, when requests come from one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scenario: Vec<String>,
    /// Closed loop: workers. Open loop: keep-alive connections kept.
    pub concurrency: usize,
    /// Open loop only: the arrival process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<Arrivals>,
    /// Open loop only: how the rate changed over the run, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<Shape>,
    /// Open loop only: the number of recorded arrivals replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_arrivals: Option<usize>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub timeout_s: f64,
    /// The share of the schedule this run sent (`--shard i/N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<crate::shard::Shard>,
    /// How many shards' reports `merge` combined into this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_shards: Option<u32>,
}

/// A run's configuration and statistics, and the samples they came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub params: Params,
    pub summary: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Raw>,
}

impl Report {
    /// Markdown-ish text for a terminal or a BENCHMARKS.md entry.
    pub fn render(&self) -> String {
        let (p, s) = (&self.params, &self.summary);
        let mut out = String::new();
        let bounds = [
            p.duration_s.map(|d| format!("duration {d}s")),
            p.requests.map(|n| format!("{n} requests")),
            Some(format!("warmup {}s", p.warmup_s)),
            Some(format!("timeout {}s", p.timeout_s)),
            p.shard.map(|shard| format!("shard {shard}")),
            p.merged_shards.map(|n| format!("{n} shards merged")),
        ];
        let bounds: Vec<String> = bounds.into_iter().flatten().collect();
        let what = if p.scenario.is_empty() {
            format!("{} {}", p.method, p.url)
        } else {
            format!("scenario {} at {}", p.scenario.join(", "), p.url)
        };
        let _ = writeln!(out, "## {what} ({})\n", p.protocol);
        match &p.arrivals {
            None => {
                let _ = writeln!(out, "{}, concurrency {}, {}\n", p.mode, p.concurrency, bounds.join(", "));
            }
            Some(a) => {
                let process = match (p.replay_arrivals, &p.shape) {
                    (Some(n), _) => format!("replay of {n} recorded arrivals"),
                    (None, Some(shape)) => format!("{a:?}, {shape:?}"),
                    (None, None) => format!("{a:?}"),
                };
                let _ = writeln!(
                    out,
                    "{}, {process}, {} connections kept, {}\n",
                    p.mode,
                    p.concurrency,
                    bounds.join(", ")
                );
            }
        }
        if let Some(schedule) = &s.schedule {
            let verdict = if schedule.valid {
                "valid".to_owned()
            } else {
                format!("INVALID: {}", schedule.invalid_because.join("; "))
            };
            let lag = schedule.lag_ms.as_ref().map_or("no requests".to_owned(), |l| {
                format!("p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms", l.p50, l.p99, l.max)
            });
            let _ =
                writeln!(out, "offered {:.1} req/s; schedule lag {lag}; {verdict}\n", schedule.offered_per_s);
        }
        let _ = writeln!(out, "| metric | value |\n|---|---|");
        let _ = writeln!(out, "| requests | {} |", s.requests);
        let _ = writeln!(out, "| duration | {:.3} s |", s.duration_s);
        let _ = writeln!(out, "| throughput | {:.1} req/s |", s.requests_per_s);
        let _ =
            writeln!(out, "| successes (2xx) | {} ({:.2}%) |", s.successes, percent(s.successes, s.requests));
        let _ = writeln!(out, "| errors | {} |", s.errors);
        for (status, n) in &s.errors_by_status {
            let _ = writeln!(out, "| errors: status {status} | {n} |");
        }
        for (kind, n) in &s.errors_by_kind {
            let _ = writeln!(out, "| errors: {} | {n} |", kind_name(*kind));
        }
        let metrics = [
            ("latency (2xx)", &s.latency_ms),
            ("TTFT", &s.ttft_ms),
            ("inter-token", &s.itl_ms),
            ("per output token", &s.tpot_ms),
            ("queue wait", &s.queue_ms),
        ];
        let shown: Vec<(&str, &Latency)> =
            metrics.iter().filter_map(|(name, l)| l.as_ref().map(|l| (*name, l))).collect();
        if !shown.is_empty() {
            let names: Vec<&str> = shown.iter().map(|(n, _)| *n).collect();
            let _ = writeln!(out, "\n| ms | {} |", names.join(" | "));
            let _ = writeln!(out, "|---|{}", "---:|".repeat(shown.len()));
            type Pick = fn(&Latency) -> f64;
            let rows: [(&str, Pick); 6] = [
                ("mean", |l| l.mean),
                ("p50", |l| l.p50),
                ("p90", |l| l.p90),
                ("p99", |l| l.p99),
                ("p99.9", |l| l.p999),
                ("max", |l| l.max),
            ];
            for (row, value) in rows {
                let cells: Vec<String> = shown.iter().map(|(_, l)| format!("{:.3}", value(l))).collect();
                let _ = writeln!(out, "| {row} | {} |", cells.join(" | "));
            }
        }
        if s.output_tokens > 0 {
            let _ = writeln!(out, "\noutput tokens (streamed): {}", s.output_tokens);
        }
        if s.queue_ms.is_some() {
            let _ =
                writeln!(out, "\nqueue wait from x-infergate-queue-ms on {} responses", s.queue_ms_responses);
        } else {
            let _ = writeln!(out, "\nqueue wait: no x-infergate-queue-ms header on 2xx responses");
        }
        if !s.scenarios.is_empty() {
            let _ = writeln!(
                out,
                "\n| scenario | requests | 2xx | req/s | p50 ms | p99 ms | TTFT p99 ms | queue p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|"
            );
            let ms = |l: &Option<Latency>, f: fn(&Latency) -> f64| {
                l.as_ref().map_or("—".into(), |l| format!("{:.3}", f(l)))
            };
            for (name, x) in &s.scenarios {
                let _ = writeln!(
                    out,
                    "| {name} | {} | {} | {:.1} | {} | {} | {} | {} |",
                    x.requests,
                    x.successes,
                    x.requests_per_s,
                    ms(&x.latency_ms, |l| l.p50),
                    ms(&x.latency_ms, |l| l.p99),
                    ms(&x.ttft_ms, |l| l.p99),
                    ms(&x.queue_ms, |l| l.p99),
                );
            }
        }
        for (kind, detail) in &s.first_error {
            let _ = writeln!(out, "first {} error: {detail}", kind_name(*kind));
        }
        out
    }
}

fn kind_name(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Connect => "connect",
        ErrorKind::Timeout => "timeout",
        ErrorKind::Other => "other",
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(queue_ms: Option<f64>) -> Outcome {
        Outcome::Response { status: 200, queue_ms, stream: None }
    }

    const AT: Duration = Duration::ZERO;

    fn error(kind: ErrorKind, detail: &str) -> Outcome {
        Outcome::Error { kind, detail: detail.to_owned() }
    }

    #[test]
    fn tally_counts_successes_errors_and_queue_time() {
        let mut t = Tally::default();
        for i in 1..=100u64 {
            t.record(ok((i % 2 == 0).then_some(4.0)), Duration::from_millis(i), AT);
        }
        t.record(
            Outcome::Response { status: 503, queue_ms: Some(1000.0), stream: None },
            Duration::from_secs(9),
            AT,
        );
        t.record(Outcome::Response { status: 429, queue_ms: None, stream: None }, Duration::ZERO, AT);
        t.record(Outcome::Response { status: 503, queue_ms: None, stream: None }, Duration::ZERO, AT);
        t.record(error(ErrorKind::Timeout, "first"), Duration::from_secs(30), AT);
        t.record(error(ErrorKind::Timeout, "second"), Duration::from_secs(30), AT);

        let s = t.summarize(Duration::from_secs(2));
        assert_eq!((s.requests, s.successes, s.errors), (105, 100, 5));
        assert_eq!(s.requests_per_s, 52.5);
        assert_eq!(s.errors_by_status, BTreeMap::from([(429, 1), (503, 2)]));
        assert_eq!(s.errors_by_kind, BTreeMap::from([(ErrorKind::Timeout, 2)]));
        assert_eq!(s.first_error[&ErrorKind::Timeout], "first");
        // Latency and queue time cover 2xx responses only.
        let l = s.latency_ms.unwrap();
        for (got, exact) in [(l.p50, 50.0), (l.p90, 90.0), (l.p99, 99.0), (l.p999, 100.0)] {
            assert!(got >= exact && got <= exact * 1.008, "{got} vs {exact}");
        }
        assert_eq!((l.mean, l.max), (50.5, 100.0));
        assert_eq!((s.queue_ms.as_ref().map(|q| q.mean), s.queue_ms_responses), (Some(4.0), 50));
    }

    #[test]
    fn a_ttft_slo_counts_streamed_answers_by_their_first_token() {
        let streamed = |first_ms: u64, gaps: &[u64]| Outcome::Response {
            status: 200,
            queue_ms: None,
            stream: Some(crate::request::Streamed {
                first_token: Some(Duration::from_millis(first_ms)),
                gaps: gaps.iter().map(|g| Duration::from_millis(*g)).collect(),
                tokens: gaps.len() as u64 + 1,
                end: Duration::from_millis(first_ms + gaps.iter().sum::<u64>()),
            }),
        };
        let mut t = Tally::default();
        t.record(streamed(40, &[10, 10]), Duration::from_millis(60), AT);
        t.record(streamed(90, &[5]), Duration::from_millis(95), AT);
        t.record(ok(None), Duration::from_millis(10), AT);
        let limit = Duration::from_millis(50);
        assert_eq!(t.successes_within(Metric::Ttft, limit), 1, "only the first stream's token came in time");
        assert_eq!(t.successes_within(Metric::Latency, limit), 1);
        assert_eq!(t.quantile_ms(Metric::Ttft, 1.0), Some(90.0));
        let s = t.summarize(Duration::from_secs(1));
        assert_eq!(s.output_tokens, 5);
        assert_eq!(s.itl_ms.map(|l| l.max), Some(10.0));
        // (the histogram's resolution: buckets under 0.8% wide; max is exact)
        let tpot = s.tpot_ms.unwrap();
        assert!((5.0..5.04).contains(&tpot.p50) && tpot.max == 10.0, "{tpot:?}");
    }

    #[test]
    fn merged_tallies_equal_one_tally() {
        let outcomes = [ok(Some(1.0)), ok(None), error(ErrorKind::Connect, "refused")];
        let (mut a, mut b, mut all) = (Tally::default(), Tally::default(), Tally::default());
        for (i, o) in outcomes.iter().cycle().take(30).enumerate() {
            let latency = Duration::from_micros(i as u64 * 997);
            if i % 2 == 0 { &mut a } else { &mut b }.record(o.clone(), latency, AT);
            all.record(o.clone(), latency, AT);
        }
        a.merge(b);
        let elapsed = Duration::from_secs(1);
        assert_eq!(a.summarize(elapsed), all.summarize(elapsed));
    }

    #[test]
    fn empty_run_reports_zeroes_without_dividing_by_zero() {
        let s = Tally::default().summarize(Duration::ZERO);
        assert_eq!(
            (s.requests, s.requests_per_s, s.latency_ms.clone(), s.queue_ms.clone()),
            (0, 0.0, None, None)
        );
        let report = Report { params: params(), summary: s, raw: None };
        assert!(report.render().contains("| successes (2xx) | 0 (0.00%) |"));
    }

    fn params() -> Params {
        Params {
            mode: "closed-loop".into(),
            method: "POST".into(),
            url: "http://127.0.0.1:8080/v1/embeddings".into(),
            protocol: "HTTP/1.1".into(),
            scenario: Vec::new(),
            concurrency: 8,
            arrivals: None,
            shape: None,
            replay_arrivals: None,
            duration_s: Some(10.0),
            requests: None,
            warmup_s: 1.0,
            timeout_s: 30.0,
            shard: None,
            merged_shards: None,
        }
    }

    #[test]
    fn render_shows_every_statistic() {
        let mut t = Tally::default();
        t.record(ok(Some(2.5)), Duration::from_millis(12), AT);
        t.record(Outcome::Response { status: 503, queue_ms: None, stream: None }, Duration::ZERO, AT);
        t.record(error(ErrorKind::Connect, "connection refused"), Duration::ZERO, AT);
        let text =
            Report { params: params(), summary: t.summarize(Duration::from_secs(1)), raw: None }.render();
        for needle in [
            "## POST http://127.0.0.1:8080/v1/embeddings (HTTP/1.1)",
            "closed-loop, concurrency 8, duration 10s, warmup 1s, timeout 30s",
            "| requests | 3 |",
            "| throughput | 3.0 req/s |",
            "| successes (2xx) | 1 (33.33%) |",
            "| errors: status 503 | 1 |",
            "| errors: connect | 1 |",
            "| p99.9 | 12.000 | 2.500 |",
            "| ms | latency (2xx) | queue wait |",
            "queue wait from x-infergate-queue-ms on 1 responses",
            "first connect error: connection refused",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn json_uses_readable_keys() {
        let mut t = Tally::default();
        t.record(error(ErrorKind::Timeout, "elapsed"), Duration::ZERO, AT);
        t.record(Outcome::Response { status: 503, queue_ms: None, stream: None }, Duration::ZERO, AT);
        let json = serde_json::to_value(t.summarize(Duration::from_secs(1))).unwrap();
        assert_eq!(json["errors_by_kind"]["timeout"], 1);
        assert_eq!(json["errors_by_status"]["503"], 1);
        assert!(json["latency_ms"].is_null());
    }
}
