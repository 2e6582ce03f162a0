//! The command line: clap definitions and their translation into a validated [`RunConfig`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{value_parser, ArgGroup, Args, Parser, Subcommand};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Method, Uri};

use crate::arrivals::{Arrivals, Shape};
use crate::capacity::{Settings, Slo};
use crate::open::OpenLoop;
use crate::request::Target;
use crate::run::RunConfig;

/// Load generator for infergate.
#[derive(Debug, Parser)]
#[command(name = "infergate-load", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP/1.1 load against one URL. Closed loop by default: each worker sends its next
    /// request as soon as the previous response body has been read. With --rate, open loop:
    /// requests leave on a schedule whatever the server does, and latency runs from each
    /// request's intended send time.
    Run(RunArgs),
    /// Search for the highest open-loop rate meeting the SLOs: the rate doubles until a step
    /// fails, then bisects; reports each step, the capacity, the knee and, over repeated
    /// searches, a 95% confidence interval.
    Capacity(CapacityArgs),
    /// Combine the reports of a sharded run (`run --shard i/N --json FILE` on N generators)
    /// into the report of the whole run: counts and histograms added exactly
    Merge(MergeArgs),
    /// Turn a capacity result (`capacity --json`) into autoscaler settings: a Kubernetes HPA
    /// v2 and a KEDA ScaledObject on the in-flight metric, and, given a traffic trace, a
    /// replay of the HPA algorithm predicting SLO attainment and replica-hours.
    Tune(TuneArgs),
}

/// Flags of `infergate-load tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// The JSON written by `infergate-load capacity --json`
    #[arg(long, value_name = "FILE")]
    pub capacity: PathBuf,
    /// Deployment and autoscaler name
    #[arg(long, default_value = "infergate")]
    pub name: String,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Requests per second at the quietest time (sets the minimum replicas)
    #[arg(long, value_parser = parse_non_negative)]
    pub baseline_rate: f64,
    /// Requests per second at the busiest time (sets the maximum replicas)
    #[arg(long, value_parser = parse_rate)]
    pub peak_rate: f64,
    /// Share of a replica's capacity kept free when scaling
    #[arg(long, default_value_t = 0.2)]
    pub headroom: f64,
    /// Prometheus address for KEDA's trigger
    #[arg(long, default_value = "http://prometheus.monitoring.svc:9090")]
    pub prometheus: String,
    /// Seconds a scale-down waits for the recommendation to stay low
    #[arg(long, default_value_t = 300)]
    pub scale_down_window: u32,
    /// Replay: seconds from a scale-up decision to the new pod serving
    #[arg(long, default_value_t = 60.0)]
    pub pod_startup: f64,
    /// Replay the HPA over this trace: CSV lines `seconds,requests_per_second`
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// The model's name in infergate's configuration, for scheduler.toml (written when the
    /// capacity search read the gateway's batching with --metrics-url)
    #[arg(long, default_value = "MODEL")]
    pub model: String,
    /// The model's workers (its `concurrency`) during the capacity search, for the batch
    /// settings' simulation
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..=1024))]
    pub workers: u32,
    /// Write hpa.yaml, scaledobject.yaml, tune.json (and scheduler.toml) into this directory
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

impl TuneArgs {
    pub fn to_settings(&self) -> crate::tune::TuneSettings {
        crate::tune::TuneSettings {
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            baseline_rate: self.baseline_rate,
            peak_rate: self.peak_rate,
            headroom: self.headroom,
            prometheus: self.prometheus.clone(),
            scale_down_window_s: self.scale_down_window,
            pod_startup_s: self.pod_startup,
        }
    }
}

/// Flags of `infergate-load capacity`.
#[derive(Debug, Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// SLO: what --slo-quantile and --slo-latency apply to: the whole response, or the first
    /// token of a streamed answer (ask for `"stream": true` in the body)
    #[arg(long, value_enum, default_value = "latency")]
    pub slo_metric: crate::report::Metric,

    /// SLO: this latency quantile (from each request's intended send time) ...
    #[arg(long, default_value_t = 0.99)]
    pub slo_quantile: f64,

    /// ... must be within this
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_positive_duration)]
    pub slo_latency: Duration,

    /// SLO: share of requests answered 2xx within --slo-latency
    #[arg(long, default_value_t = 0.99)]
    pub min_goodput: f64,

    /// A step also fails when the target completes less than this share of the offered rate
    #[arg(long, default_value_t = 0.97)]
    pub min_throughput: f64,

    /// First rate tried, requests per second
    #[arg(long, default_value = "10", value_parser = parse_rate)]
    pub start: f64,

    /// Highest rate tried
    #[arg(long, default_value = "100000", value_parser = parse_rate)]
    pub max: f64,

    /// Stop bisecting when the failing rate is within this fraction of the passing one
    #[arg(long, default_value_t = 0.05)]
    pub precision: f64,

    /// Measured time per step
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub step: Duration,

    /// Load before each step's measurement
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Limit on each request
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// How arrivals are spaced
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrivals: ArrivalKind,

    /// Seed of the random schedules
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Coefficient of variation of --arrivals gamma's gaps
    #[arg(long, default_value_t = 2.0, value_parser = parse_rate)]
    pub cv: f64,

    /// Keep-alive connections kept
    #[arg(short, long, value_name = "N", default_value_t = 64, value_parser = value_parser!(u32).range(1..))]
    pub connections: u32,

    /// Requests in flight at most; a step that reaches it fails
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// A step whose schedule lag p99 is over this ends the search (the generator, not the target, is the limit)
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_positive_duration)]
    pub max_lag: Duration,

    /// No step-by-step progress on stderr (shown when stderr is a terminal)
    #[arg(long, short)]
    pub quiet: bool,

    /// Searches to run; two or more give a confidence interval
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u32).range(1..=20))]
    pub repeats: u32,

    #[command(flatten)]
    pub output: OutputArgs,

    /// The gateway's Prometheus endpoint (e.g. http://127.0.0.1:8080/metrics): its batching is
    /// read before and after each step, so that `tune` can propose batch settings
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<Uri>,

    /// With --metrics-url: read only this model's series (all models' when unset)
    #[arg(long, value_name = "NAME", requires = "metrics_url")]
    pub model: Option<String>,
}

impl CapacityArgs {
    pub fn to_settings(&self) -> anyhow::Result<(Target, Settings)> {
        anyhow::ensure!((0.0..=1.0).contains(&self.slo_quantile), "--slo-quantile is in [0, 1]");
        anyhow::ensure!((0.0..=1.0).contains(&self.min_goodput), "--min-goodput is in [0, 1]");
        anyhow::ensure!((0.0..=1.0).contains(&self.min_throughput), "--min-throughput is in [0, 1]");
        anyhow::ensure!(self.start <= self.max, "--start is above --max");
        anyhow::ensure!(self.precision > 0.0 && self.precision < 1.0, "--precision is in (0, 1)");
        let arrivals = self.arrivals.at(self.start, self.seed, self.cv);
        let settings = Settings {
            slo: Slo {
                metric: self.slo_metric,
                quantile: self.slo_quantile,
                latency_ms: self.slo_latency.as_secs_f64() * 1000.0,
                min_goodput: self.min_goodput,
                min_throughput: self.min_throughput,
            },
            start: self.start,
            max: self.max,
            precision: self.precision,
            step: self.step,
            warmup: self.warmup,
            timeout: self.timeout,
            open: OpenLoop {
                arrivals,
                shape: Shape::Flat,
                replay: None,
                progress: !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                max_in_flight: self.max_in_flight as usize,
                max_lag: self.max_lag,
                connections: self.connections as usize,
                shard: None,
            },
            repeats: self.repeats,
            metrics: self.metrics_url.clone().map(|url| (url, self.model.clone())),
        };
        Ok((self.target.to_target()?, settings))
    }
}

/// Where a result goes besides stdout (run's and capacity's).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Also write the result as JSON to FILE
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also write an HTML report with plots (SVG) to FILE
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

impl OutputArgs {
    /// Write `result` as JSON and `html()` as the HTML report, where asked.
    pub fn write(&self, result: &impl serde::Serialize, html: impl FnOnce() -> String) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            let json = serde_json::to_vec_pretty(result).context("serializing the result")?;
            std::fs::write(path, json).with_context(|| format!("writing --json {}", path.display()))?;
        }
        if let Some(path) = &self.html {
            std::fs::write(path, html()).with_context(|| format!("writing --html {}", path.display()))?;
        }
        Ok(())
    }
}

/// The request to send: URL, method, body and headers (every subcommand's).
#[derive(Debug, Args)]
pub struct TargetArgs {
    /// Target URL (http:// or https://)
    #[arg(long)]
    pub url: Uri,

    /// Trust the PEM certificates in FILE for https:// targets, besides Mozilla's roots
    #[arg(long, value_name = "FILE", conflicts_with = "insecure")]
    pub cacert: Option<PathBuf>,

    /// Accept any server certificate of an https:// target (the traffic is still encrypted)
    #[arg(long, short = 'k')]
    pub insecure: bool,

    /// HTTP method [default: POST with a body, GET without]
    #[arg(long, value_parser = parse_method)]
    pub method: Option<Method>,

    /// A scenario file (TOML): a weighted mix of chat, embeddings, transcription, OCR,
    /// moderation and raw requests with their class, tenant and deadline headers; --url then
    /// gives only the scheme, host and port
    #[arg(long, value_name = "FILE", conflicts_with_all = ["body", "body_json", "method"])]
    pub scenario: Option<PathBuf>,

    /// Send the contents of FILE as the request body
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,

    /// Send JSON as the request body (checked to be valid JSON)
    #[arg(long, value_name = "JSON", conflicts_with = "body")]
    pub body_json: Option<String>,

    /// Speak HTTP/2 (h2c with prior knowledge for http://, h2 in ALPN for https://): all
    /// requests in flight are streams on one connection
    #[arg(long)]
    pub http2: bool,

    /// Request header, repeatable; Content-Type defaults to application/json when a body is
    /// given
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl TargetArgs {
    /// The request, its body file read.
    pub fn to_target(&self) -> anyhow::Result<Target> {
        anyhow::ensure!(
            matches!(self.url.scheme_str(), Some("http" | "https")) && self.url.authority().is_some(),
            "--url must be an absolute http:// or https:// URL, got {}",
            self.url
        );
        let body = match (&self.body, &self.body_json) {
            (Some(path), _) => Some(Bytes::from(
                std::fs::read(path).with_context(|| format!("reading --body {}", path.display()))?,
            )),
            (None, Some(json)) => {
                serde_json::from_str::<serde::de::IgnoredAny>(json)
                    .context("--body-json is not valid JSON")?;
                Some(Bytes::from(json.clone()))
            }
            (None, None) => None,
        };
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        if body.is_some() && !headers.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let method = match (&self.method, &body) {
            (Some(method), _) => method.clone(),
            (None, Some(_)) => Method::POST,
            (None, None) => Method::GET,
        };
        let mix = match &self.scenario {
            Some(path) => {
                let mut extra = headers.clone();
                extra.remove(CONTENT_TYPE);
                Some(std::sync::Arc::new(crate::scenario::Mix::load(path, &self.url)?.with_headers(&extra)))
            }
            None => None,
        };
        Ok(Target {
            method,
            uri: self.url.clone(),
            headers,
            body: body.unwrap_or_default(),
            mix,
            http2: self.http2,
            tls: crate::tls::Tls::new(self.cacert.as_deref(), self.insecure)?,
        })
    }
}

/// Flags of `infergate-load run`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("bound").required(true).multiple(true)))]
pub struct RunArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    /// Number of workers, each with its own keep-alive connection
    #[arg(short, long, value_name = "N", default_value_t = 8, value_parser = value_parser!(u32).range(1..))]
    pub concurrency: u32,

    /// Stop sending after this long past warmup, e.g. 10s or 2m
    #[arg(long, group = "bound", value_parser = parse_positive_duration)]
    pub duration: Option<Duration>,

    /// Stop after this many measured requests
    #[arg(long, group = "bound", value_name = "N", value_parser = value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Send load this long before measuring; those requests are left out of the statistics
    #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,

    /// Limit on each request: connect, send and read the whole response body
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Scrape the target's Prometheus metrics from URL every second during the run (e.g.
    /// http://127.0.0.1:8080/metrics), aligned with the run's own timeline
    #[arg(long, value_name = "URL")]
    pub metrics_url: Option<Uri>,

    /// A metric to scrape (summed over its series); repeatable [default: infergate_queue_depth,
    /// infergate_requests_in_flight]
    #[arg(long = "scrape", value_name = "NAME", requires = "metrics_url")]
    pub scrape: Vec<String>,

    /// Open loop: send this many requests per second on a schedule (-c is then the number of
    /// keep-alive connections kept; more open while requests are outstanding)
    #[arg(long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Open loop: how arrivals are spaced around the rate
    #[arg(long, value_enum, default_value = "constant", requires = "rate")]
    pub arrivals: ArrivalKind,

    /// Open loop: coefficient of variation of --arrivals gamma's gaps (above 1: bursty)
    #[arg(long, default_value_t = 2.0, requires = "rate", value_parser = parse_rate)]
    pub cv: f64,

    /// Open loop: seed of random schedules (the same seed gives the same schedule)
    #[arg(long, default_value_t = 1, requires = "rate")]
    pub seed: u64,

    /// Open loop: ramp the rate linearly to this over --ramp-over (then hold it)
    #[arg(long, value_name = "PER_SECOND", requires_all = ["rate", "ramp_over"], conflicts_with_all = ["step_by", "on"])]
    pub ramp_to: Option<f64>,

    /// Open loop: how long the ramp lasts
    #[arg(long, value_name = "DURATION", requires = "ramp_to", value_parser = parse_positive_duration)]
    pub ramp_over: Option<Duration>,

    /// Open loop: raise the rate by this every --step-every (steps)
    #[arg(long, value_name = "PER_SECOND", requires_all = ["rate", "step_every"], conflicts_with = "on")]
    pub step_by: Option<f64>,

    /// Open loop: how long each step lasts
    #[arg(long, value_name = "DURATION", requires = "step_by", value_parser = parse_positive_duration)]
    pub step_every: Option<Duration>,

    /// Open loop, bursty: send at the rate for this long, then nothing for --off, repeated
    #[arg(long, value_name = "DURATION", requires_all = ["rate", "off"], value_parser = parse_positive_duration)]
    pub on: Option<Duration>,

    /// Open loop: the silent part of --on/--off
    #[arg(long, value_name = "DURATION", requires = "on", value_parser = parse_positive_duration)]
    pub off: Option<Duration>,

    /// Open loop: replay a recorded trace's arrival times (seconds, one per line or the first
    /// CSV column) instead of a rate
    #[arg(long, value_name = "FILE", conflicts_with = "rate")]
    pub replay: Option<PathBuf>,

    /// Open loop: requests in flight at most; arrivals beyond it are not sent and the run is
    /// marked invalid
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = value_parser!(u32).range(1..))]
    pub max_in_flight: u32,

    /// Open loop: the run is marked invalid when the generator's schedule lag has a p99 above this
    #[arg(long, value_name = "DURATION", default_value = "1ms", value_parser = parse_positive_duration)]
    pub max_lag: Duration,

    /// No progress line (it is shown when stderr is a terminal)
    #[arg(long, short)]
    pub quiet: bool,

    /// Open loop, distributed: send only shard i of N of the schedule (every N-th arrival,
    /// from the i-th, i from 0); N generators running the same command with i = 0..N-1 send
    /// the whole schedule between them, and `infergate-load merge` adds up their --json
    /// reports
    #[arg(long, value_name = "i/N")]
    pub shard: Option<crate::shard::Shard>,
}

/// Flags of `infergate-load merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The shards' reports (`run --shard i/N --json FILE`), every shard once
    #[arg(required = true, value_name = "REPORT")]
    pub reports: Vec<PathBuf>,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// `--arrivals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ArrivalKind {
    /// Evenly spaced
    Constant,
    /// A Poisson process: exponential gaps
    Poisson,
    /// Gamma-distributed gaps with --cv (bursty above 1)
    Gamma,
}

impl ArrivalKind {
    fn at(self, rate: f64, seed: u64, cv: f64) -> Arrivals {
        match self {
            ArrivalKind::Constant => Arrivals::Constant { rate },
            ArrivalKind::Poisson => Arrivals::Poisson { rate, seed },
            ArrivalKind::Gamma => Arrivals::Gamma { rate, cv, seed },
        }
    }
}

impl RunArgs {
    /// Checks the flags against each other and reads the body and replay files.
    pub fn to_config(&self) -> anyhow::Result<RunConfig> {
        let replay = match &self.replay {
            Some(path) => Some(crate::arrivals::parse_replay(
                &std::fs::read_to_string(path)
                    .with_context(|| format!("reading --replay {}", path.display()))?,
            )?),
            None => None,
        };
        let shape = match (
            self.ramp_to.zip(self.ramp_over),
            self.step_by.zip(self.step_every),
            self.on.zip(self.off),
        ) {
            (Some((to, over)), _, _) => Shape::Ramp { to, over_s: over.as_secs_f64() },
            (_, Some((by, every)), _) => Shape::Steps { by, every_s: every.as_secs_f64() },
            (_, _, Some((on, off))) => Shape::OnOff { on_s: on.as_secs_f64(), off_s: off.as_secs_f64() },
            _ => Shape::Flat,
        };
        let open = match (self.rate, replay) {
            (Some(rate), _) => Some((self.arrivals.at(rate, self.seed, self.cv), None)),
            (None, Some(times)) => {
                let span = times.last().copied().unwrap_or(0.0) - times.first().copied().unwrap_or(0.0);
                let mean = if span > 0.0 { times.len() as f64 / span } else { 1.0 };
                Some((Arrivals::Constant { rate: mean }, Some(times)))
            }
            (None, None) => None,
        };
        anyhow::ensure!(
            self.shard.is_none() || open.is_some(),
            "--shard splits an open loop's schedule: give --rate or --replay"
        );
        let progress = !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Ok(RunConfig {
            target: self.target.to_target()?,
            concurrency: self.concurrency as usize,
            duration: self.duration,
            requests: self.requests,
            warmup: self.warmup,
            timeout: self.timeout,
            open: open.map(|(arrivals, replay)| OpenLoop {
                arrivals,
                shape,
                replay,
                max_in_flight: self.max_in_flight as usize,
                max_lag: self.max_lag,
                connections: self.concurrency as usize,
                progress,
                shard: self.shard,
            }),
            progress,
            metrics: self.metrics_url.clone().map(|url| {
                let names = if self.scrape.is_empty() {
                    crate::scrape::DEFAULT_METRICS.iter().map(|n| n.to_string()).collect()
                } else {
                    self.scrape.clone()
                };
                (url, names)
            }),
        })
    }
}

/// A command-line value the parsers below refuse; clap prints it after the flag.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0}")]
    Method(#[from] http::method::InvalidMethod),
    #[error("expected 'Name: value', got {0:?}")]
    Header(String),
    #[error("header name: {0}")]
    HeaderName(#[from] http::header::InvalidHeaderName),
    #[error("header value: {0}")]
    HeaderValue(#[from] http::header::InvalidHeaderValue),
    #[error("expected a positive number of requests per second, got {0:?}")]
    Rate(String),
    #[error("expected a number of requests per second, got {0:?}")]
    NonNegativeRate(String),
    #[error("{0}")]
    Duration(#[from] humantime::DurationError),
    #[error("must be greater than zero")]
    ZeroDuration,
}

fn parse_method(s: &str) -> Result<Method, ArgError> {
    Ok(Method::from_bytes(s.to_ascii_uppercase().as_bytes())?)
}

fn parse_header(s: &str) -> Result<(HeaderName, HeaderValue), ArgError> {
    let (name, value) = s.split_once(':').ok_or_else(|| ArgError::Header(s.to_owned()))?;
    Ok((HeaderName::from_bytes(name.trim().as_bytes())?, HeaderValue::from_str(value.trim())?))
}

fn parse_rate(s: &str) -> Result<f64, ArgError> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(ArgError::Rate(s.to_owned())),
    }
}

fn parse_non_negative(s: &str) -> Result<f64, ArgError> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(ArgError::NonNegativeRate(s.to_owned())),
    }
}

fn parse_positive_duration(s: &str) -> Result<Duration, ArgError> {
    match humantime::parse_duration(s)? {
        d if d.is_zero() => Err(ArgError::ZeroDuration),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<RunArgs, clap::Error> {
        let argv = ["infergate-load", "run"].iter().chain(args);
        Cli::try_parse_from(argv).map(|cli| match cli.command {
            Command::Run(args) => args,
            other => panic!("not a run: {other:?}"),
        })
    }

    fn config(args: &[&str]) -> anyhow::Result<RunConfig> {
        parse(args).map_err(anyhow::Error::from)?.to_config()
    }

    const URL: [&str; 2] = ["--url", "http://127.0.0.1:8080/v1/embeddings"];

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bound_is_required() {
        let error = parse(&URL).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::MissingRequiredArgument);
        assert!(parse(&[&URL[..], &["--duration", "10s"]].concat()).is_ok());
        assert!(parse(&[&URL[..], &["--requests", "5"]].concat()).is_ok());
        let both = parse(&[&URL[..], &["--requests", "5", "--duration", "1m"]].concat()).unwrap();
        assert_eq!((both.requests, both.duration), (Some(5), Some(Duration::from_secs(60))));
    }

    #[test]
    fn zero_bounds_are_rejected() {
        assert!(parse(&[&URL[..], &["--requests", "0"]].concat()).is_err());
        assert!(parse(&[&URL[..], &["--duration", "0s"]].concat()).is_err());
        assert!(parse(&[&URL[..], &["--requests", "1", "-c", "0"]].concat()).is_err());
        assert!(parse(&[&URL[..], &["--requests", "1", "--timeout", "0s"]].concat()).is_err());
    }

    #[test]
    fn defaults_without_a_body() {
        let c = config(&[&URL[..], &["--duration", "10s"]].concat()).unwrap();
        assert_eq!(c.target.method, Method::GET);
        assert!(c.target.body.is_empty() && c.target.headers.is_empty());
        assert_eq!((c.concurrency, c.requests), (8, None));
        assert_eq!((c.warmup, c.timeout), (Duration::ZERO, Duration::from_secs(30)));
    }

    #[test]
    fn a_json_body_defaults_to_post_and_application_json() {
        let c =
            config(&[&URL[..], &["--requests", "1", "--body-json", r#"{"input":"hi"}"#]].concat()).unwrap();
        assert_eq!(c.target.method, Method::POST);
        assert_eq!(c.target.body, Bytes::from_static(br#"{"input":"hi"}"#));
        assert_eq!(c.target.headers[CONTENT_TYPE], "application/json");
    }

    #[test]
    fn explicit_method_and_headers_win() {
        let args = [
            &URL[..],
            &["--requests", "1", "--body-json", "[]", "--method", "put"],
            &["-H", "Content-Type: text/plain", "--header", "authorization:Bearer abc", "-H", "x-a: 1"],
            &["-H", "x-a: 2"],
        ]
        .concat();
        let c = config(&args).unwrap();
        assert_eq!(c.target.method, Method::PUT);
        assert_eq!(c.target.headers[CONTENT_TYPE], "text/plain");
        assert_eq!(c.target.headers["authorization"], "Bearer abc");
        assert_eq!(c.target.headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
    }

    #[test]
    fn body_file_is_read() {
        let path = std::env::temp_dir().join(format!("infergate-load-body-{}.json", std::process::id()));
        std::fs::write(&path, b"{\"model\":\"m\"}").unwrap();
        let c = config(&[&URL[..], &["--requests", "1", "--body", path.to_str().unwrap()]].concat());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(c.unwrap().target.body, Bytes::from_static(b"{\"model\":\"m\"}"));
        assert!(config(&[&URL[..], &["--requests", "1", "--body", "/nonexistent/x"]].concat()).is_err());
    }

    #[test]
    fn invalid_input_is_rejected() {
        let bound = ["--requests", "1"];
        let conflict =
            parse(&[&URL[..], &bound, &["--body", "f", "--body-json", "{}"]].concat()).unwrap_err();
        assert_eq!(conflict.kind(), ErrorKind::ArgumentConflict);
        assert!(parse(&[&URL[..], &bound, &["-H", "no-colon"]].concat()).is_err());
        assert!(parse(&[&URL[..], &bound, &["-H", "bad name: v"]].concat()).is_err());
        assert!(config(&[&URL[..], &bound, &["--body-json", "{not json"]].concat()).is_err());
        assert!(config(&["--url", "https://example.com/", "--requests", "1"]).is_ok());
        assert!(config(&["--url", "ftp://example.com/", "--requests", "1"]).is_err());
        assert!(config(&[
            "--url",
            "https://example.com/",
            "--requests",
            "1",
            "--cacert",
            "/nonexistent.pem"
        ])
        .is_err());
        assert!(parse(&[&URL[..], &bound, &["--cacert", "a.pem", "--insecure"]].concat()).is_err());
        assert!(config(&["--url", "/relative", "--requests", "1"]).is_err());
        assert!(parse(&[&URL[..], &bound, &["--rate", "0"]].concat()).is_err());
        assert!(parse(&[&URL[..], &bound, &["--rate", "-5"]].concat()).is_err());
        assert!(parse(&[&URL[..], &bound, &["--arrivals", "poisson"]].concat()).is_err(), "needs --rate");
    }

    #[test]
    fn a_rate_makes_the_run_open_loop() {
        let c = config(
            &[&URL[..], &["--duration", "5s", "--rate", "250", "--arrivals", "poisson", "--seed", "9"]]
                .concat(),
        )
        .unwrap();
        let open = c.open.unwrap();
        assert_eq!(open.arrivals, Arrivals::Poisson { rate: 250.0, seed: 9 });
        assert_eq!((open.max_in_flight, open.max_lag), (10_000, Duration::from_millis(1)));
        assert!(config(&[&URL[..], &["--duration", "5s"]].concat()).unwrap().open.is_none());
    }

    #[test]
    fn shapes_and_replays_are_parsed_and_checked() {
        let d = ["--duration", "5s", "--rate", "100"];
        let ramp = config(&[&URL[..], &d, &["--ramp-to", "400", "--ramp-over", "1m"]].concat()).unwrap();
        assert_eq!(ramp.open.unwrap().shape, Shape::Ramp { to: 400.0, over_s: 60.0 });
        let steps = config(&[&URL[..], &d, &["--step-by", "50", "--step-every", "10s"]].concat()).unwrap();
        assert_eq!(steps.open.unwrap().shape, Shape::Steps { by: 50.0, every_s: 10.0 });
        let bursty = config(
            &[&URL[..], &d, &["--arrivals", "gamma", "--cv", "3", "--on", "2s", "--off", "8s"]].concat(),
        )
        .unwrap()
        .open
        .unwrap();
        assert_eq!(bursty.shape, Shape::OnOff { on_s: 2.0, off_s: 8.0 });
        assert_eq!(bursty.arrivals, Arrivals::Gamma { rate: 100.0, cv: 3.0, seed: 1 });
        assert!(parse(&[&URL[..], &d, &["--ramp-to", "400"]].concat()).is_err(), "a ramp needs its length");
        assert!(parse(
            &[&URL[..], &d, &["--ramp-to", "4", "--ramp-over", "1s", "--on", "1s", "--off", "1s"]].concat()
        )
        .is_err());
        assert!(
            parse(&[&URL[..], &["--duration", "5s", "--ramp-to", "4", "--ramp-over", "1s"]].concat())
                .is_err(),
            "needs --rate"
        );

        let path = std::env::temp_dir().join(format!("infergate-load-replay-{}.csv", std::process::id()));
        std::fs::write(&path, "t\n0.0\n0.5\n1.0\n").unwrap();
        let replay = config(&[&URL[..], &["--duration", "5s", "--replay", path.to_str().unwrap()]].concat());
        std::fs::remove_file(&path).unwrap();
        let open = replay.unwrap().open.unwrap();
        assert_eq!(open.replay.unwrap().len(), 3);
        assert!(parse(&[&URL[..], &d, &["--replay", "x.csv"]].concat()).is_err(), "a replay has no --rate");
    }
}
