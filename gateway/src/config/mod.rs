//! Gateway configuration: TOML, unknown keys refused, key paths in every
//! error, `INFERGATE__SECTION__KEY` environment overrides, and `validate()`
//! for the rules that span fields.

mod env;
mod error;
mod tls;
mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use infergate_backends::{BackendConfig, Task};
use infergate_scheduler::{Class, Policy, SchedulerConfig};
use serde::Deserialize;

pub use error::ConfigError;
pub use tls::{TlsConfig, TlsFiles};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub scheduler: SchedulerSection,
    #[serde(default)]
    pub audio: AudioSection,
    #[serde(default)]
    pub translation: TranslationSection,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// Names that stand for one of several models, chosen by weight.
    #[serde(default)]
    pub aliases: Vec<AliasConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub feedback: FeedbackSection,
    /// The file as parsed, environment overrides applied: what a reload
    /// compares section by section.
    #[serde(skip)]
    pub source: toml::Table,
}

/// `[server]`: the listener and its timeouts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: u64,
    /// Time a client has to send the request headers.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time a client has to send the whole body.
    #[serde(with = "humantime_serde")]
    pub body_read_timeout: Duration,
    /// Deadline of a request that names none (a model may override it).
    #[serde(with = "humantime_serde")]
    pub default_timeout: Duration,
    /// How long in-flight requests may run after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long to keep accepting after SIGTERM with `/readyz` failing, so a
    /// load balancer can stop routing here first (0 = stop at once).
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// Accept HTTP/2 beside HTTP/1.1: h2c (prior knowledge) without TLS,
    /// offered in ALPN with it.
    pub http2: bool,
    /// Threads running the server and the backends' I/O (model inference has
    /// its own threads); 0 = one per CPU this process may use; 1 runs
    /// everything on the main thread (tokio's current-thread scheduler).
    pub worker_threads: usize,
    /// Longest `X-Request-Id` a client may set; a longer (or unprintable)
    /// one is dropped and a fresh id minted.
    pub max_request_id_bytes: usize,
    /// TLS on the listener (`tls = { cert, key, client_ca }`); plain HTTP when unset.
    pub tls: Option<TlsConfig>,
    /// Connections open at once; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Streams a client may have open at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// Largest request head: HTTP/1.1's read buffer and HTTP/2's header list.
    pub max_header_list_bytes: u32,
    /// A second, plain-HTTP listener that alone serves `/metrics`
    /// (the public one then answers it 404).
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 25 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            default_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(30),
            drain_delay: Duration::ZERO,
            http2: true,
            worker_threads: 0,
            max_request_id_bytes: 128,
            tls: None,
            max_connections: 10_000,
            http2_max_concurrent_streams: 100,
            max_header_list_bytes: 64 * 1024,
            metrics_listen: None,
        }
    }
}

/// `[log]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormatConfig,
    /// `RUST_LOG`-style filter; `RUST_LOG` wins when set.
    pub filter: Option<String>,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormatConfig {
    #[default]
    Text,
    Json,
}

/// `[telemetry]`: OpenTelemetry trace export over OTLP/HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Base URL of an OTLP receiver (`http://127.0.0.1:4318` for
    /// `http/protobuf`, `http://127.0.0.1:4317` for `grpc`);
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` when unset; no export when neither is.
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (default) or `grpc`; `OTEL_EXPORTER_OTLP_PROTOCOL` when unset.
    pub protocol: Option<OtlpProtocolConfig>,
    /// Headers sent with every export (e.g. an API key).
    pub otlp_headers: std::collections::HashMap<String, String>,
    /// PEM certificates trusted for an `https://` endpoint besides the
    /// system's roots (a private CA); OTLP/HTTP only.
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// Fraction of new traces recorded (a sampled incoming parent is always followed).
    pub sample_ratio: f64,
    /// Spans buffered for export; beyond this they are dropped, never waited for.
    pub max_queue: usize,
    /// How often buffered spans and log records are sent.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// How often metrics are sent over OTLP (`OTEL_METRIC_EXPORT_INTERVAL`, in ms, when unset).
    #[serde(default, with = "humantime_serde")]
    pub metrics_interval: Option<Duration>,
    /// Send log records over OTLP as well as to stderr.
    pub export_logs: bool,
    pub service_name: String,
}

/// `telemetry.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocolConfig {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "grpc")]
    Grpc,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            protocol: None,
            otlp_headers: std::collections::HashMap::new(),
            otlp_ca_file: None,
            sample_ratio: 1.0,
            max_queue: 4096,
            export_interval: Duration::from_secs(1),
            metrics_interval: None,
            export_logs: true,
            service_name: "infergate".into(),
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Requests without any API key are served as this tenant. Unset (the
    /// default) means every API route needs a key. A wrong key is refused
    /// either way.
    pub anonymous_tenant: Option<String>,
}

/// `[limits]`: explicit bounds on what one request may ask for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest `max_tokens` / `max_completion_tokens`; also the default.
    pub max_completion_tokens: u32,
    /// Most chat messages in one request.
    pub max_messages: usize,
    /// Most inputs in one embeddings or moderation request.
    pub max_inputs: usize,
    /// Most estimated tokens in one text input.
    pub max_input_tokens: u32,
    /// Largest audio upload in bytes.
    pub max_audio_bytes: u64,
    /// Longest audio accepted, in seconds (decoding stops past it).
    pub max_audio_seconds: f64,
    /// Highest source sample rate accepted (decoding and resampling cost
    /// grows with it); 4 kHz is the lowest.
    pub max_audio_sample_rate: u32,
    /// Most elements in one KServe request, over all inputs.
    pub max_tensor_elements: u64,
    /// Largest image (width × height) accepted for OCR, read from its
    /// header before it is queued or decoded. Image backends have their own
    /// `max_image_pixels` too.
    pub max_image_pixels: u64,
    /// Deepest nesting of arrays and objects in a JSON body; deeper bodies
    /// are refused (400) before they are decoded.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_completion_tokens: 4096,
            max_messages: 1024,
            max_inputs: 2048,
            max_input_tokens: 32_768,
            max_audio_bytes: 25 * 1024 * 1024,
            max_audio_seconds: 1800.0,
            max_audio_sample_rate: 192_000,
            max_tensor_elements: 16 * 1024 * 1024,
            max_image_pixels: 25_000_000,
            max_json_depth: 64,
        }
    }
}

/// `[[tenants]]`: who may call, and how urgently they are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    #[serde(default, with = "class_serde")]
    pub class: Class,
    /// Lower-case hex SHA-256 of each API key (`printf %s KEY | sha256sum`).
    #[serde(default)]
    pub api_key_sha256: Vec<String>,
    /// A file of more digests, one a line (`#` comments and blank lines
    /// skipped), the way Kubernetes mounts a Secret; read again on reload.
    #[serde(default)]
    pub api_key_sha256_file: Option<std::path::PathBuf>,
    /// The digests read from `api_key_sha256_file`.
    #[serde(skip)]
    pub file_keys: Vec<String>,
    /// Limits on everything the tenant sends.
    #[serde(default)]
    pub rate_limits: RateLimits,
    /// Limits on what the tenant sends to one model, beside `rate_limits`.
    #[serde(default)]
    pub model_rate_limits: std::collections::BTreeMap<String, RateLimits>,
    /// The models the tenant may use (others answer 404 as if absent);
    /// unset: all.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Inputs and outputs may be recorded (feedback and low-confidence
    /// events); otherwise only ids, scores and metadata are.
    #[serde(default)]
    pub capture_content: bool,
}

impl TenantConfig {
    /// Every key digest: the inline ones, then the file's.
    pub fn key_digests(&self) -> impl Iterator<Item = &String> {
        self.api_key_sha256.iter().chain(&self.file_keys)
    }
}

/// `rate_limits = { … }`: per-minute limits are rolling (a token bucket
/// that holds `burst` worth of allowance, one minute unless set); daily
/// limits reset at 00:00 UTC and monthly ones on the 1st, 00:00 UTC;
/// `concurrent` counts requests in flight. Unset: no limit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    pub requests_per_minute: Option<u64>,
    pub requests_per_day: Option<u64>,
    pub tokens_per_minute: Option<u64>,
    pub tokens_per_day: Option<u64>,
    pub characters_per_month: Option<u64>,
    pub audio_seconds_per_minute: Option<u64>,
    pub audio_seconds_per_day: Option<u64>,
    pub concurrent: Option<u64>,
    /// How much allowance the per-minute limits hold at most, as time at
    /// their rate (`"10s"`: a sixth of a minute's); one minute unless set.
    #[serde(default, with = "humantime_serde")]
    pub burst: Option<Duration>,
}

impl RateLimits {
    /// Every limit that is set, by its key.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        [
            ("requests_per_minute", self.requests_per_minute),
            ("requests_per_day", self.requests_per_day),
            ("tokens_per_minute", self.tokens_per_minute),
            ("tokens_per_day", self.tokens_per_day),
            ("characters_per_month", self.characters_per_month),
            ("audio_seconds_per_minute", self.audio_seconds_per_minute),
            ("audio_seconds_per_day", self.audio_seconds_per_day),
            ("concurrent", self.concurrent),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.map(|v| (key, v)))
    }
}

/// `[store]`: where limits (shared by every replica) are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `redis://host:port/db`; unset: in this process's memory.
    pub url: Option<String>,
    /// What a request meets while the store cannot answer.
    pub on_error: OnStoreError,
    /// The longest a request waits for the store.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Prefix of every key infergate writes.
    pub key_prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            on_error: OnStoreError::Allow,
            timeout: Duration::from_millis(5),
            key_prefix: "infergate:".into(),
        }
    }
}

/// `store.on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Serve the request unlimited.
    Allow,
    /// Refuse it (503, retry later).
    Deny,
}

/// `[[models]]`: one served model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients put in `model`.
    pub name: String,
    pub task: Task,
    pub backend: BackendConfig,
    #[serde(default)]
    pub batch: BatchConfig,
    /// Batches of this model that may run at once.
    #[serde(default = "one")]
    pub concurrency: usize,
    /// Bounds on this model's queue.
    #[serde(default)]
    pub queue: QueueConfig,
    /// The scheduling policy; `scheduler.policy` if unset.
    #[serde(default, with = "policy_serde::option")]
    pub policy: Option<Policy>,
    /// Scales the request's natural cost (tokens, audio seconds, items) into
    /// this model's cost unit.
    #[serde(default = "unit")]
    pub cost_factor: f64,
    /// Seed of the latency model `t = base + per_cost·cost + per_item·items`;
    /// learned online from measured batches. Defaults to the synthetic
    /// backend's own settings, else 5 ms per batch.
    #[serde(default)]
    pub latency: Option<LatencyConfig>,
    /// Deadline for requests that name none; `server.default_timeout` if unset.
    #[serde(default, with = "humantime_serde")]
    pub default_timeout: Option<Duration>,
    /// Chat models: the prompt `/v2/translate` sends, with `{source}`,
    /// `{target}`, `{instructions}` and `{text}` filled in.
    #[serde(default)]
    pub translation_prompt: Option<String>,
    /// The response cache of this model's deterministic answers, with
    /// identical requests in flight coalesced into one job; none if unset.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// Low-confidence answers, sampled, as events for `[feedback]`'s sinks.
    #[serde(default)]
    pub capture: Option<CaptureConfig>,
    /// Models of the same task that take a job this one cannot: when its
    /// admission finds the deadline infeasible, or every replica of its
    /// remote backend is out of rotation, the first fallback that admits the
    /// job runs it (one level: a fallback's own fallbacks are not followed).
    #[serde(default)]
    pub fallback: Vec<String>,
}

/// `[[aliases]] name = "chat", targets = [{ model = "a", weight = 90 }, { model = "b", weight = 10 }]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AliasConfig {
    /// The name clients put in `model`, and tenants' allow-lists name.
    pub name: String,
    pub targets: Vec<AliasTarget>,
}

/// One model an alias stands for, and its share of the alias's requests.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    pub model: String,
    #[serde(default = "one_f64")]
    pub weight: f64,
}

fn one_f64() -> f64 {
    1.0
}

/// `capture = { sample, below }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Share of the low-confidence answers recorded.
    pub sample: f64,
    /// Confidence (0-1) under which an answer is low-confidence.
    pub below: f64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig { sample: 0.1, below: 0.5 }
    }
}

/// `[feedback]`: where feedback and captured events go, and how long an
/// answer can be given feedback on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackSection {
    /// How long after an answer `POST /v1/feedback` may name its request id.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Bytes of answers remembered for feedback at most (about 200 each,
    /// plus their content for tenants with `capture_content`; the least
    /// used go first).
    pub max_bytes: u64,
    /// A JSON-lines file, rotated to `PATH.1` at `jsonl_max_bytes`.
    pub jsonl: Option<std::path::PathBuf>,
    pub jsonl_max_bytes: u64,
    /// A Redis stream on `[store]` (`XADD` with `MAXLEN ~ redis_maxlen`).
    pub redis_stream: Option<String>,
    pub redis_maxlen: u64,
    /// OTLP log records on `telemetry.otlp_endpoint` (a Collector's Kafka
    /// exporter takes them to Kafka: `otel/collector-kafka.yaml`).
    pub otlp: bool,
}

impl Default for FeedbackSection {
    fn default() -> Self {
        FeedbackSection {
            window: Duration::from_secs(24 * 3600),
            max_bytes: 64 << 20,
            jsonl: None,
            jsonl_max_bytes: 64 << 20,
            redis_stream: None,
            redis_maxlen: 100_000,
            otlp: false,
        }
    }
}

impl FeedbackSection {
    /// Whether any sink is set (else there is no feedback to take).
    pub fn enabled(&self) -> bool {
        self.jsonl.is_some() || self.redis_stream.is_some() || self.otlp
    }
}

/// `cache = { ttl, max_bytes, shared }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long an answer is served from the cache.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most bytes of answers held (least recently and least often used go first).
    pub max_bytes: u64,
    /// One cache for every tenant: identical requests of different tenants
    /// share answers. By default each tenant has its own.
    pub shared: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { ttl: Duration::from_secs(3600), max_bytes: 256 << 20, shared: false }
    }
}

/// `queue = { max_jobs, max_bytes, tenant_max_jobs, tenant_max_bytes }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    pub max_jobs: usize,
    pub max_bytes: usize,
    /// Per tenant; defaults to the model's limits.
    pub tenant_max_jobs: Option<usize>,
    pub tenant_max_bytes: Option<usize>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig { max_jobs: 1024, max_bytes: 256 << 20, tenant_max_jobs: None, tenant_max_bytes: None }
    }
}

/// `latency = { base, per_cost, per_item }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyConfig {
    #[serde(default, with = "humantime_serde")]
    pub base: Duration,
    #[serde(default, with = "humantime_serde")]
    pub per_cost: Duration,
    #[serde(default, with = "humantime_serde")]
    pub per_item: Duration,
}

/// `[audio]`: how long audio is cut into jobs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioSection {
    /// Longest job in seconds: longer audio is split, in silences, into
    /// sibling jobs that share the request's deadline (Whisper takes 30 s).
    pub max_chunk_seconds: f64,
    /// The `[[models]]` entry that finds speech in long audio (a tensor
    /// model on the `voice-activity` pipeline, such as silero VAD): cuts
    /// fall in silences, and chunks without speech are skipped. Its jobs
    /// queue on that model like its KServe requests. Without it, cuts fall
    /// at the quietest moments.
    pub vad_model: Option<String>,
}

impl Default for AudioSection {
    fn default() -> Self {
        AudioSection { max_chunk_seconds: 30.0, vad_model: None }
    }
}

/// `[translation]`: which chat models serve DeepL's `/v2/translate`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslationSection {
    /// The chat model that translates; the first chat model if unset.
    pub model: Option<String>,
    /// Other models for some target languages, by DeepL code (`DE`, or
    /// `EN-GB` before `EN`).
    pub targets: std::collections::BTreeMap<String, String>,
    /// Most `text` values in one request (DeepL's limit is 50).
    pub max_texts: usize,
    /// Most characters over a request's texts.
    pub max_chars: usize,
    /// Most tokens generated for one text.
    pub max_output_tokens: u32,
    /// The DeepL source codes the models translate from and into (a code
    /// covers its regional targets: `EN` covers `EN-GB`); `/v2/languages`
    /// lists these and `/v2/translate` refuses the others. Empty: every
    /// DeepL language.
    pub languages: Vec<String>,
}

impl TranslationSection {
    /// Whether a DeepL code (source or target) is among `languages`.
    pub fn offers(&self, code: &str) -> bool {
        let base = crate::call::translate::languages::base(code);
        self.languages.is_empty() || self.languages.iter().any(|l| l.eq_ignore_ascii_case(base))
    }
}

impl Default for TranslationSection {
    fn default() -> Self {
        TranslationSection {
            model: None,
            targets: Default::default(),
            max_texts: 50,
            max_chars: 32_768,
            max_output_tokens: 1024,
            languages: Vec::new(),
        }
    }
}

/// `[scheduler]`: defaults for every model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    #[serde(with = "policy_serde")]
    pub policy: Policy,
    /// Best-effort jobs sort as if due this long after arrival (aging).
    #[serde(with = "humantime_serde")]
    pub best_effort_horizon: Duration,
    /// Deficit round robin quantum per unit of class weight.
    #[serde(with = "humantime_serde")]
    pub fair_quantum: Duration,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        let d = SchedulerConfig::default();
        SchedulerSection {
            policy: d.policy,
            best_effort_horizon: d.best_effort_horizon,
            fair_quantum: d.fair_quantum,
        }
    }
}

/// `policy = "deadline" | "fifo" | "priority"` through `Policy`'s `FromStr`.
mod policy_serde {
    use infergate_scheduler::Policy;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Policy, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Policy>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// `batch = { max_size, max_delay }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub max_size: usize,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_size: 1, max_delay: Duration::ZERO }
    }
}

fn one() -> usize {
    1
}

fn unit() -> f64 {
    1.0
}

/// `class = "interactive"` through `Class`'s `FromStr`.
mod class_serde {
    use infergate_scheduler::Class;
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Class, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Read, override from the process environment, parse and validate.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        Config::from_toml(&text, std::env::vars())
    }

    /// Parse TOML text with the given environment overrides, then validate.
    pub fn from_toml(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            let message = e.message().to_owned();
            let at = e.span().map(|s| line_of(text, s.start)).unwrap_or_default();
            ConfigError::new(format!("line {at}"), message)
        })?;
        env::apply(&mut table, vars)?;
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| {
                let path = e.path().to_string();
                ConfigError::new(
                    if path == "." { "(top level)".to_owned() } else { path },
                    e.into_inner().to_string(),
                )
            })?;
        config.source = table;
        config.read_key_files()?;
        config.validate()?;
        Ok(config)
    }

    /// Read every tenant's `api_key_sha256_file`.
    fn read_key_files(&mut self) -> Result<(), ConfigError> {
        for (i, tenant) in self.tenants.iter_mut().enumerate() {
            let Some(path) = &tenant.api_key_sha256_file else { continue };
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(
                    format!("tenants[{i}].api_key_sha256_file"),
                    format!("{}: {e}", path.display()),
                )
            })?;
            tenant.file_keys = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect();
        }
        Ok(())
    }

    /// The model with this name.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.iter().find(|m| m.name == name)
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
