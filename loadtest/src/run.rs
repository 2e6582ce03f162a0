//! The closed-loop runner: `concurrency` workers, each with its own client and keep-alive
//! connection, each sending its next request as soon as the previous response body is read.
//! The offered load therefore follows the server's speed, which is what makes it closed-loop.
//! A run with an arrival process goes to the open-loop runner ([`crate::open`]) instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::open::OpenLoop;
use crate::report::{Params, Raw, Report, Tally};
use crate::request::{self, Target};

/// Everything a closed-loop run needs; built from the command line by [`crate::cli`].
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub target: Target,
    /// Number of workers, hence of requests in flight.
    pub concurrency: usize,
    /// Stop sending this long after warmup ends.
    pub duration: Option<Duration>,
    /// Stop after this many measured requests.
    pub requests: Option<u64>,
    /// Load sent before measuring starts, left out of the statistics.
    pub warmup: Duration,
    /// Limit on each request, body included.
    pub timeout: Duration,
    /// Open loop: arrivals on a schedule instead of `concurrency` closed loops.
    pub open: Option<OpenLoop>,
    /// The target's Prometheus endpoint and the metrics to scrape from it every second.
    pub metrics: Option<(http::Uri, Vec<String>)>,
    /// Closed loop: print a progress line to stderr every second (the open loop's own
    /// setting is in `open`).
    pub progress: bool,
}

impl RunConfig {
    fn params(&self) -> Params {
        Params {
            mode: if self.open.is_some() { "open-loop" } else { "closed-loop" }.into(),
            arrivals: self.open.as_ref().map(|o| o.arrivals),
            shape: self.open.as_ref().and_then(|o| {
                (o.replay.is_none() && o.shape != crate::arrivals::Shape::Flat).then_some(o.shape)
            }),
            replay_arrivals: self.open.as_ref().and_then(|o| o.replay.as_ref().map(|r| r.len())),
            method: self.target.method.to_string(),
            url: self.target.uri.to_string(),
            protocol: if self.target.http2 { "HTTP/2" } else { "HTTP/1.1" }.into(),
            scenario: self
                .target
                .mix
                .as_ref()
                .map(|mix| mix.entries().iter().map(|e| e.name.to_string()).collect())
                .unwrap_or_default(),
            concurrency: self.concurrency,
            duration_s: self.duration.map(|d| d.as_secs_f64()),
            requests: self.requests,
            warmup_s: self.warmup.as_secs_f64(),
            timeout_s: self.timeout.as_secs_f64(),
            shard: self.open.as_ref().and_then(|o| o.shard),
            merged_shards: None,
        }
    }
}

/// State shared by the workers of one run.
struct Plan {
    target: Target,
    timeout: Duration,
    /// Requests sent from here on are measured.
    measure_from: Instant,
    /// No request is sent from here on.
    stop_at: Option<Instant>,
    /// Measured requests allowed, and how many have been claimed.
    budget: Option<u64>,
    claimed: AtomicU64,
    live: Option<Arc<crate::progress::Live>>,
}

impl Plan {
    /// Whether a request sent at `now` is measured, or `None` when the run is over. A
    /// request is measured when it is sent after warmup, whenever it completes.
    fn admit(&self, now: Instant) -> Option<bool> {
        if now < self.measure_from {
            return Some(false);
        }
        if self.stop_at.is_some_and(|stop| now >= stop) {
            return None;
        }
        if let Some(budget) = self.budget {
            if self.claimed.fetch_add(1, Ordering::Relaxed) >= budget {
                return None;
            }
        }
        Some(true)
    }
}

/// Runs closed-loop load until a bound is reached and every request in flight has finished
/// (each within the timeout), then summarizes the measured requests.
pub async fn run(config: RunConfig) -> anyhow::Result<Report> {
    anyhow::ensure!(
        config.duration.is_some() || config.requests.is_some(),
        "a run needs a bound: a duration or a number of requests"
    );
    anyhow::ensure!(config.concurrency > 0, "concurrency must be at least 1");
    let head_start = if config.open.is_some() { crate::open::HEAD_START } else { Duration::ZERO };
    let scraper = config.metrics.clone().map(|(url, names)| {
        let origin = Instant::now() + head_start + config.warmup;
        crate::scrape::Scraper::start(
            request::client(&config.target.tls),
            url,
            names,
            origin,
            Duration::from_secs(1),
        )
    });
    let mut report = run_load(&config).await?;
    if let Some(scraper) = scraper {
        report.summary.scraped = scraper.stop();
    }
    Ok(report)
}

async fn run_load(config: &RunConfig) -> anyhow::Result<Report> {
    if let Some(open) = config.open.clone() {
        let result = crate::open::run(
            config.target.clone(),
            open,
            config.warmup,
            config.duration,
            config.requests,
            config.timeout,
        )
        .await?;
        let mut summary = result.tally.summarize(result.elapsed);
        summary.schedule = Some(result.schedule);
        let raw =
            Raw { tally: result.tally, elapsed_s: result.elapsed.as_secs_f64(), schedule: Some(result.kept) };
        return Ok(Report { params: config.params(), summary, raw: Some(raw) });
    }
    let measure_from = Instant::now() + config.warmup;
    let plan = Arc::new(Plan {
        target: config.target.clone(),
        timeout: config.timeout,
        measure_from,
        stop_at: config.duration.map(|d| measure_from + d),
        budget: config.requests,
        claimed: AtomicU64::new(0),
        live: config.progress.then(Default::default),
    });
    let progress = plan.live.clone().map(|live| live.show(measure_from));

    // HTTP/1.1: a client, hence a keep-alive connection, per worker; HTTP/2: one client whose
    // single connection carries every worker's stream.
    let tls = &config.target.tls;
    let shared = config.target.http2.then(|| request::client_h2(tls));
    let mut workers = JoinSet::new();
    for _ in 0..config.concurrency {
        let client = shared.clone().unwrap_or_else(|| request::client(tls));
        workers.spawn(worker(Arc::clone(&plan), client));
    }
    let mut tally = Tally::default();
    let mut last_end: Option<Instant> = None;
    while let Some(joined) = workers.join_next().await {
        let (worker_tally, worker_end) = joined.context("a load worker failed")?;
        tally.merge(worker_tally);
        last_end = last_end.max(worker_end);
    }
    if let Some(progress) = progress {
        progress.abort();
        eprintln!();
    }
    let elapsed = last_end.map_or(Duration::ZERO, |end| end.saturating_duration_since(measure_from));
    let summary = tally.summarize(elapsed);
    let raw = Raw { tally, elapsed_s: elapsed.as_secs_f64(), schedule: None };
    Ok(Report { params: config.params(), summary, raw: Some(raw) })
}

/// One closed loop: send, read the whole response, repeat until the plan says stop. Returns
/// what it measured and when its last measured request ended.
async fn worker(plan: Arc<Plan>, client: request::Client) -> (Tally, Option<Instant>) {
    let mut tally = Tally::default();
    let mut last_end = None;
    while let Some(measured) = plan.admit(Instant::now()) {
        let sent = Instant::now();
        let result = plan.target.send(&client, plan.timeout, sent.into_std(), None).await;
        if measured {
            if let Some(live) = &plan.live {
                live.record(result.outcome.is_success(), result.latency);
            }
            tally.record_sent(result, sent.saturating_duration_since(plan.measure_from));
            last_end = Some(Instant::now());
        }
    }
    (tally, last_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(warmup: Duration, duration: Option<Duration>, budget: Option<u64>) -> (Plan, Instant) {
        let start = Instant::now();
        let target = Target {
            method: http::Method::GET,
            uri: http::Uri::from_static("http://127.0.0.1:1/"),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            mix: None,
            http2: false,
            tls: crate::tls::Tls::default(),
        };
        let plan = Plan {
            target,
            timeout: Duration::from_secs(1),
            measure_from: start + warmup,
            stop_at: duration.map(|d| start + warmup + d),
            budget,
            claimed: AtomicU64::new(0),
            live: None,
        };
        (plan, start)
    }

    #[test]
    fn warmup_requests_are_unmeasured_and_do_not_use_the_budget() {
        let (plan, start) = plan(Duration::from_secs(1), None, Some(2));
        for _ in 0..10 {
            assert_eq!(plan.admit(start), Some(false));
        }
        let after = start + Duration::from_secs(1);
        assert_eq!(plan.admit(after), Some(true));
        assert_eq!(plan.admit(after), Some(true));
        assert_eq!(plan.admit(after), None);
        assert_eq!(plan.admit(after), None, "stays over once over");
    }

    #[test]
    fn duration_bound_stops_at_its_deadline() {
        let (plan, start) = plan(Duration::from_secs(1), Some(Duration::from_secs(2)), None);
        assert_eq!(plan.admit(start + Duration::from_millis(2999)), Some(true));
        assert_eq!(plan.admit(start + Duration::from_secs(3)), None);
    }

    #[test]
    fn the_first_bound_reached_wins() {
        let (plan, start) = plan(Duration::ZERO, Some(Duration::from_secs(2)), Some(1));
        assert_eq!(plan.admit(start), Some(true));
        assert_eq!(plan.admit(start), None);
    }

    #[tokio::test]
    async fn a_run_without_a_bound_is_refused() {
        let (plan, _) = plan(Duration::ZERO, None, None);
        let config = RunConfig {
            target: plan.target,
            concurrency: 1,
            duration: None,
            requests: None,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
            open: None,
            metrics: None,
            progress: false,
        };
        assert!(run(config).await.is_err());
    }
}
