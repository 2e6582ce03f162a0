//! Telemetry set-up: logs to stderr and, when an OTLP endpoint is given,
//! traces exported over OTLP/HTTP (protobuf) with the `tracing` bridge, so
//! every `tracing` span becomes an OpenTelemetry span and log lines carry
//! trace and span ids.
//!
//! The span processor is OpenTelemetry's batch processor on its own thread:
//! a bounded queue (`max_queue`, default 4096 spans) that drops spans when
//! the collector is slow or down, so telemetry never blocks a request or
//! grows without bound.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::span_processor_with_async_runtime as async_runtime;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies (port 4318); `/v1/traces` is appended.
    #[default]
    HttpProtobuf,
    /// OTLP/gRPC (port 4317). Needs a tokio runtime at `init`.
    Grpc,
}

/// What to export, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryOptions {
    pub protocol: OtlpProtocol,
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter; `None` reads `RUST_LOG`, else `info`.
    pub log_filter: Option<String>,
    /// Base URL of an OTLP receiver (`http://host:4318` for HTTP, where
    /// `/v1/traces` is appended; `http://host:4317` for gRPC). `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export (authentication).
    pub otlp_headers: HashMap<String, String>,
    /// Fraction of new traces to record; a sampled parent is always followed.
    pub sample_ratio: f64,
    /// Spans buffered for export before new ones are dropped.
    pub max_queue: usize,
    /// How often buffered spans are sent.
    pub export_interval: Duration,
    pub service_name: String,
    pub service_version: String,
}

impl Default for TelemetryOptions {
    fn default() -> Self {
        TelemetryOptions {
            protocol: OtlpProtocol::HttpProtobuf,
            log_format: LogFormat::Text,
            log_filter: None,
            otlp_endpoint: None,
            otlp_headers: HashMap::new(),
            sample_ratio: 1.0,
            max_queue: 4096,
            export_interval: Duration::from_secs(1),
            service_name: "infergate".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Keeps the exporter alive; [`TelemetryGuard::shutdown`] flushes it. Call
/// it where blocking is allowed, while the runtime still runs (gRPC export
/// is a task on it): e.g. in `tokio::task::spawn_blocking`.
#[must_use = "dropping the guard without shutdown() loses the last spans"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Export what is buffered and stop the exporter.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                eprintln!("infergate: telemetry shutdown: {error}");
            }
        }
    }
}

/// Set-up failed (a malformed endpoint, say).
#[derive(Debug, thiserror::Error)]
#[error("telemetry: {0}")]
pub struct TelemetryError(String);

/// The noisy transport crates are capped at `warn` unless the filter names them.
const DEFAULT_FILTER: &str = "info,hyper=warn,h2=warn,tower=warn,reqwest=warn,opentelemetry=warn";

/// Install logging and, if configured, trace export. Call once, at start-up.
pub fn init(options: &TelemetryOptions) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match &options.log_filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    };
    // The log filter applies to log lines only: traces keep every info span
    // whatever the log level, minus the transport crates (and the exporter's
    // own HTTP client, which would otherwise trace itself).
    let fmt = match options.log_format {
        LogFormat::Text => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false).boxed()
        }
        LogFormat::Json => {
            tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().flatten_event(true).boxed()
        }
    }
    // Of the spans, log lines need only the server span's context (request
    // id, route, trace id); formatting the fields of every hop's span for the
    // log cost ~25 µs per request at the default level, for nothing.
    .with_filter(filter.and(tracing_subscriber::filter::filter_fn(|meta| {
        meta.is_event() || meta.name() == crate::names::spans::SERVER
    })));
    let provider =
        options.otlp_endpoint.as_deref().map(|endpoint| provider(endpoint, options)).transpose()?;
    let otel = provider.as_ref().map(|p| {
        let traced = tracing_subscriber::filter::Targets::new()
            .with_default(tracing::Level::INFO)
            .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
            .with_target("h2", tracing::level_filters::LevelFilter::OFF)
            .with_target("reqwest", tracing::level_filters::LevelFilter::OFF)
            .with_target("tower", tracing::level_filters::LevelFilter::OFF)
            .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF);
        // Source locations, thread names and busy/idle timings are not worth
        // their per-span cost on a request path.
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("infergate"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(traced)
    });
    // A second init (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(fmt).with(otel).try_init();
    Ok(TelemetryGuard { provider })
}

fn provider(endpoint: &str, options: &TelemetryOptions) -> Result<SdkTracerProvider, TelemetryError> {
    let batch = BatchConfigBuilder::default()
        .with_max_queue_size(options.max_queue)
        .with_scheduled_delay(options.export_interval)
        .with_max_export_batch_size(options.max_queue.clamp(1, 2048))
        .build();
    let builder = SdkTracerProvider::builder();
    let builder = match options.protocol {
        OtlpProtocol::HttpProtobuf => {
            let exporter = SpanExporter::builder()
                .with_http()
                .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
                .with_headers(options.otlp_headers.clone())
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| TelemetryError(e.to_string()))?;
            // Its own thread; the blocking HTTP client never touches tokio.
            builder
                .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
        }
        OtlpProtocol::Grpc => {
            if tokio::runtime::Handle::try_current().is_err() {
                return Err(TelemetryError(
                    "OTLP/gRPC export must be initialised inside a tokio runtime".into(),
                ));
            }
            let mut headers = http::HeaderMap::new();
            for (key, value) in &options.otlp_headers {
                let name =
                    http::HeaderName::try_from(key.as_str()).map_err(|e| TelemetryError(e.to_string()))?;
                let value =
                    http::HeaderValue::try_from(value.as_str()).map_err(|e| TelemetryError(e.to_string()))?;
                headers.insert(name, value);
            }
            let metadata = MetadataMap::from_headers(headers);
            let exporter = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_metadata(metadata)
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| TelemetryError(e.to_string()))?;
            // tonic needs the tokio reactor: the processor runs as a task.
            let processor =
                async_runtime::BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                    .with_batch_config(batch)
                    .build();
            builder.with_span_processor(processor)
        }
    };
    let instance = format!("{}-{}", hostname(), std::process::id());
    let resource = Resource::builder()
        .with_service_name(options.service_name.clone())
        .with_attributes([
            KeyValue::new("service.version", options.service_version.clone()),
            KeyValue::new("service.instance.id", instance),
        ])
        .build();
    let ratio = options.sample_ratio.clamp(0.0, 1.0);
    Ok(builder
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))))
        .build())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}
