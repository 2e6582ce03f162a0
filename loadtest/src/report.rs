//! Statistics of a run and their output: per-worker [`Tally`]s merge into a [`Summary`], which
//! renders as markdown for people and serializes as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::histogram::Histogram;

/// Why a request got no complete response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// No complete response within `--timeout`.
    Timeout,
    /// Anything else: connection reset, malformed response, body cut short.
    Other,
}

/// What one request ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A response whose body was read to the end.
    Response {
        status: u16,
        /// The gateway's `x-infergate-queue-ms` header, when present and numeric.
        queue_ms: Option<f64>,
    },
    /// No complete response; `detail` is the error chain, kept once per kind for the report.
    Error { kind: ErrorKind, detail: String },
}

/// What one worker saw; workers merge theirs at the end of a run.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    requests: u64,
    successes: u64,
    by_status: BTreeMap<u16, u64>,
    by_kind: BTreeMap<ErrorKind, u64>,
    first_error: BTreeMap<ErrorKind, String>,
    /// Latency of 2xx responses, in microseconds.
    latency_us: Histogram,
    queue_ms_sum: f64,
    queue_ms_count: u64,
}

impl Tally {
    /// Records one measured request. Latency and queue time count only for 2xx responses, so
    /// that fast rejections under overload do not flatter the numbers.
    pub fn record(&mut self, outcome: Outcome, latency: Duration) {
        self.requests += 1;
        match outcome {
            Outcome::Response { status, queue_ms } if (200..300).contains(&status) => {
                self.successes += 1;
                self.latency_us.record(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
                if let Some(ms) = queue_ms {
                    self.queue_ms_sum += ms;
                    self.queue_ms_count += 1;
                }
            }
            Outcome::Response { status, .. } => *self.by_status.entry(status).or_default() += 1,
            Outcome::Error { kind, detail } => {
                *self.by_kind.entry(kind).or_default() += 1;
                self.first_error.entry(kind).or_insert(detail);
            }
        }
    }

    /// Adds everything `other` recorded.
    pub fn merge(&mut self, other: Tally) {
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
        self.queue_ms_sum += other.queue_ms_sum;
        self.queue_ms_count += other.queue_ms_count;
    }

    /// Requests recorded.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// 2xx responses recorded.
    pub fn successes(&self) -> u64 {
        self.successes
    }

    /// 2xx responses within `limit` (to the histogram's resolution, under 0.8%).
    pub fn successes_within(&self, limit: Duration) -> u64 {
        self.latency_us.count_at_most(u64::try_from(limit.as_micros()).unwrap_or(u64::MAX))
    }

    /// The `q`-quantile of 2xx latency in milliseconds.
    pub fn latency_quantile_ms(&self, q: f64) -> Option<f64> {
        self.latency_us.quantile(q).map(|us| us as f64 / 1000.0)
    }

    /// The statistics of this tally over a measured `elapsed` time.
    pub fn summarize(&self, elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64();
        let latency_ms = Latency::of(&self.latency_us);
        Summary {
            requests: self.requests,
            duration_s: secs,
            requests_per_s: if secs > 0.0 { self.requests as f64 / secs } else { 0.0 },
            successes: self.successes,
            errors: self.requests - self.successes,
            errors_by_status: self.by_status.clone(),
            errors_by_kind: self.by_kind.clone(),
            first_error: self.first_error.clone(),
            latency_ms,
            queue_ms_mean: (self.queue_ms_count > 0).then(|| self.queue_ms_sum / self.queue_ms_count as f64),
            queue_ms_responses: self.queue_ms_count,
            schedule: None,
        }
    }
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
    /// Mean of `x-infergate-queue-ms` over the 2xx responses that carried it.
    pub queue_ms_mean: Option<f64>,
    pub queue_ms_responses: u64,
    /// Open loop only: the offered rate and how well the generator kept its schedule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::open::Schedule>,
}

/// How a run was configured, echoed in its output so that results are self-describing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Params {
    /// Load model: `closed-loop` or `open-loop`.
    pub mode: &'static str,
    pub method: String,
    pub url: String,
    /// Closed loop: workers. Open loop: keep-alive connections kept.
    pub concurrency: usize,
    /// Open loop only: the arrival process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arrivals: Option<crate::open::Arrivals>,
    /// Open loop only: how the rate changed over the run, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shape: Option<crate::open::Shape>,
    /// Open loop only: the number of recorded arrivals replayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_arrivals: Option<usize>,
    pub duration_s: Option<f64>,
    pub requests: Option<u64>,
    pub warmup_s: f64,
    pub timeout_s: f64,
}

/// A run's configuration and statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub params: Params,
    pub summary: Summary,
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
        ];
        let bounds: Vec<String> = bounds.into_iter().flatten().collect();
        let _ = writeln!(out, "## {} {}\n", p.method, p.url);
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
        if let Some(l) = &s.latency_ms {
            let _ = writeln!(out, "\n| latency (2xx) | ms |\n|---|---|");
            for (name, v) in [
                ("mean", l.mean),
                ("p50", l.p50),
                ("p90", l.p90),
                ("p99", l.p99),
                ("p99.9", l.p999),
                ("max", l.max),
            ] {
                let _ = writeln!(out, "| {name} | {v:.3} |");
            }
        }
        match s.queue_ms_mean {
            Some(mean) => {
                let _ = writeln!(
                    out,
                    "\nqueue wait (x-infergate-queue-ms): mean {mean:.3} ms over {} responses",
                    s.queue_ms_responses
                );
            }
            None => {
                let _ = writeln!(out, "\nqueue wait: no x-infergate-queue-ms header on 2xx responses");
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
        Outcome::Response { status: 200, queue_ms }
    }

    fn error(kind: ErrorKind, detail: &str) -> Outcome {
        Outcome::Error { kind, detail: detail.to_owned() }
    }

    #[test]
    fn tally_counts_successes_errors_and_queue_time() {
        let mut t = Tally::default();
        for i in 1..=100u64 {
            t.record(ok((i % 2 == 0).then_some(4.0)), Duration::from_millis(i));
        }
        t.record(Outcome::Response { status: 503, queue_ms: Some(1000.0) }, Duration::from_secs(9));
        t.record(Outcome::Response { status: 429, queue_ms: None }, Duration::ZERO);
        t.record(Outcome::Response { status: 503, queue_ms: None }, Duration::ZERO);
        t.record(error(ErrorKind::Timeout, "first"), Duration::from_secs(30));
        t.record(error(ErrorKind::Timeout, "second"), Duration::from_secs(30));

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
        assert_eq!((s.queue_ms_mean, s.queue_ms_responses), (Some(4.0), 50));
    }

    #[test]
    fn merged_tallies_equal_one_tally() {
        let outcomes = [ok(Some(1.0)), ok(None), error(ErrorKind::Connect, "refused")];
        let (mut a, mut b, mut all) = (Tally::default(), Tally::default(), Tally::default());
        for (i, o) in outcomes.iter().cycle().take(30).enumerate() {
            let latency = Duration::from_micros(i as u64 * 997);
            if i % 2 == 0 { &mut a } else { &mut b }.record(o.clone(), latency);
            all.record(o.clone(), latency);
        }
        a.merge(b);
        let elapsed = Duration::from_secs(1);
        assert_eq!(a.summarize(elapsed), all.summarize(elapsed));
    }

    #[test]
    fn empty_run_reports_zeroes_without_dividing_by_zero() {
        let s = Tally::default().summarize(Duration::ZERO);
        assert_eq!(
            (s.requests, s.requests_per_s, s.latency_ms.clone(), s.queue_ms_mean),
            (0, 0.0, None, None)
        );
        let report = Report { params: params(), summary: s };
        assert!(report.render().contains("| successes (2xx) | 0 (0.00%) |"));
    }

    fn params() -> Params {
        Params {
            mode: "closed-loop",
            method: "POST".into(),
            url: "http://127.0.0.1:8080/v1/embeddings".into(),
            concurrency: 8,
            arrivals: None,
            shape: None,
            replay_arrivals: None,
            duration_s: Some(10.0),
            requests: None,
            warmup_s: 1.0,
            timeout_s: 30.0,
        }
    }

    #[test]
    fn render_shows_every_statistic() {
        let mut t = Tally::default();
        t.record(ok(Some(2.5)), Duration::from_millis(12));
        t.record(Outcome::Response { status: 503, queue_ms: None }, Duration::ZERO);
        t.record(error(ErrorKind::Connect, "connection refused"), Duration::ZERO);
        let text = Report { params: params(), summary: t.summarize(Duration::from_secs(1)) }.render();
        for needle in [
            "## POST http://127.0.0.1:8080/v1/embeddings",
            "closed-loop, concurrency 8, duration 10s, warmup 1s, timeout 30s",
            "| requests | 3 |",
            "| throughput | 3.0 req/s |",
            "| successes (2xx) | 1 (33.33%) |",
            "| errors: status 503 | 1 |",
            "| errors: connect | 1 |",
            "| p99.9 | 12.000 |",
            "mean 2.500 ms over 1 responses",
            "first connect error: connection refused",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn json_uses_readable_keys() {
        let mut t = Tally::default();
        t.record(error(ErrorKind::Timeout, "elapsed"), Duration::ZERO);
        t.record(Outcome::Response { status: 503, queue_ms: None }, Duration::ZERO);
        let json = serde_json::to_value(t.summarize(Duration::from_secs(1))).unwrap();
        assert_eq!(json["errors_by_kind"]["timeout"], 1);
        assert_eq!(json["errors_by_status"]["503"], 1);
        assert!(json["latency_ms"].is_null());
    }
}
