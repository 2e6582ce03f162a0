//! Telemetry set-up: logs to stderr and, when an OTLP endpoint is given,
//! traces, logs and metrics exported over OTLP (HTTP/protobuf or gRPC).
//! [`crate::spans`] makes every `tracing` span an OpenTelemetry span;
//! log lines, on stderr and over OTLP, carry trace and span ids.
//!
//! Spans and log records go through bounded queues on their own threads
//! ([`crate::queue`]: `max_queue` items each, default 4096) that drop and
//! count when the collector is slow or down, so telemetry never blocks a
//! request or grows without bound. Metrics are read from the Prometheus
//! registry every `metrics_interval` ([`crate::otlp_metrics`]). Over
//! OTLP/HTTP all three signals share one client ([`crate::transport`]:
//! TLS by rustls with ring).

use std::collections::HashMap;
use std::time::Duration;

use std::sync::Arc;

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::{LogExporter, SpanExporter, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::{SpanData, SpanExporter as _};
use opentelemetry_sdk::Resource;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::options::{LogFormat, OtlpProtocol, TelemetryOptions};
use crate::otlp_metrics::{MetricsExporter, MetricsTarget};
use crate::processors::{span_queue, QueueOptions, QueuedLogs};
use crate::queue::ExportQueue;
use crate::spans::SpanRecorder;
use crate::transport::{Transport, TransportError};
use crate::Metrics;

/// Keeps the exporters alive; [`TelemetryGuard::shutdown`] flushes them.
/// Call it where blocking is allowed, while the runtime still runs (gRPC
/// export runs on it): e.g. in `tokio::task::spawn_blocking`.
#[must_use = "dropping the guard without shutdown() loses the last spans"]
pub struct TelemetryGuard {
    spans: Option<Arc<ExportQueue<SpanData>>>,
    logger: Option<SdkLoggerProvider>,
    metrics_target: Option<MetricsTarget>,
    metrics: Option<MetricsExporter>,
}

impl TelemetryGuard {
    /// Send the registry's metrics over OTLP every `metrics_interval`, when
    /// an endpoint is configured. Call once, when the registry exists.
    pub fn export_metrics(&mut self, metrics: Arc<Metrics>) -> Result<(), TelemetryError> {
        if let Some(target) = self.metrics_target.take() {
            self.metrics = Some(MetricsExporter::start(metrics, target).map_err(error)?);
        }
        Ok(())
    }

    /// Export what is buffered and stop the exporters.
    pub fn shutdown(mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.shutdown();
        }
        if let Some(logger) = self.logger.take() {
            if let Err(error) = logger.shutdown() {
                eprintln!("infergate: log export shutdown: {error}");
            }
        }
        if let Some(spans) = self.spans.take() {
            if let Err(error) = spans.shutdown() {
                eprintln!("infergate: trace export shutdown: {error}");
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

fn error(e: impl std::fmt::Display) -> TelemetryError {
    TelemetryError(e.to_string())
}

/// Install logging and, if configured, OTLP export of traces and logs
/// (metrics follow with [`TelemetryGuard::export_metrics`]). Call once, at start-up.
pub fn init(options: &TelemetryOptions) -> Result<TelemetryGuard, TelemetryError> {
    let filter = log_filter(options);
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
    let exporters = options.otlp_endpoint.as_deref().map(|e| Exporters::start(e, options)).transpose()?;
    let spans = exporters.as_ref().map(|x| x.spans.clone());
    let logger = exporters.as_ref().and_then(|x| x.logger.clone());
    // Spans at info (or at the log filter's level when that is more
    // verbose), and log records over OTLP at the log filter's level; never
    // from the exporters' own crates (which would trace their own exports
    // and log about exporting logs).
    let level = filter_level(options);
    let otel = spans.as_ref().map(|queue| {
        let recorder = SpanRecorder::new(options.sample_ratio, queue.clone());
        let recorder = match &logger {
            Some(provider) if options.export_logs => recorder.with_logs(provider.logger("infergate"), level),
            _ => recorder,
        };
        recorder.with_filter(without_transports(level.max(LevelFilter::INFO)))
    });
    // A second init (tests) keeps the first subscriber. Without export the
    // recorder is left out rather than added as `None`: an absent optional
    // layer still tells the registry it wants every span, and the registry
    // would then build spans that no layer uses (~10% of a proxied request).
    let installed = match otel {
        Some(otel) => tracing_subscriber::registry().with(fmt).with(otel).try_init(),
        None => tracing_subscriber::registry().with(fmt).try_init(),
    };
    // Records of the `log` crate (tokenizers, ort) reach the subscriber
    // through its log bridge, which lets every level through when the
    // filters give no hint (a `filter_fn` gives none): tokenizers' per-character
    // `trace!` then cost more than the tokenizing. Only what a layer keeps.
    if installed.is_ok() {
        log::set_max_level(as_log(level.max(LevelFilter::INFO)));
    }
    if let Some(provider) = logger.as_ref().filter(|_| options.export_events) {
        crate::events::install(provider.logger("infergate.events"));
    }
    Ok(TelemetryGuard { spans, logger, metrics_target: exporters.map(|x| x.metrics), metrics: None })
}

/// The `log` crate's level for a tracing level.
fn as_log(level: LevelFilter) -> log::LevelFilter {
    match level.into_level() {
        None => log::LevelFilter::Off,
        Some(tracing::Level::ERROR) => log::LevelFilter::Error,
        Some(tracing::Level::WARN) => log::LevelFilter::Warn,
        Some(tracing::Level::INFO) => log::LevelFilter::Info,
        Some(tracing::Level::DEBUG) => log::LevelFilter::Debug,
        Some(tracing::Level::TRACE) => log::LevelFilter::Trace,
    }
}

/// The most verbose level the log filter lets through anywhere.
fn filter_level(options: &TelemetryOptions) -> LevelFilter {
    log_filter(options).max_level_hint().unwrap_or(LevelFilter::INFO)
}

fn log_filter(options: &TelemetryOptions) -> EnvFilter {
    match &options.log_filter {
        Some(f) => EnvFilter::new(f),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER)),
    }
}

/// Everything at `level` and above except the transport and telemetry crates.
fn without_transports(level: LevelFilter) -> tracing_subscriber::filter::Targets {
    let off = LevelFilter::OFF;
    tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target("hyper", off)
        .with_target("h2", off)
        .with_target("reqwest", off)
        .with_target("tower", off)
        .with_target("tonic", off)
        .with_target("opentelemetry", off)
        .with_target("opentelemetry_sdk", off)
        .with_target("opentelemetry_otlp", off)
        .with_target("infergate_otel", off)
}

/// The providers for one OTLP endpoint, and where metrics will go.
struct Exporters {
    spans: Arc<ExportQueue<SpanData>>,
    logger: Option<SdkLoggerProvider>,
    metrics: MetricsTarget,
}

impl Exporters {
    fn start(endpoint: &str, options: &TelemetryOptions) -> Result<Self, TelemetryError> {
        let resource = resource_attributes(options);
        let sdk_resource = Resource::builder_empty()
            .with_attributes(resource.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
            .build();
        let timeout = Duration::from_secs(5);
        let transport = match options.protocol {
            OtlpProtocol::HttpProtobuf => Transport::http(timeout, options.otlp_ca_file.as_deref()),
            OtlpProtocol::Grpc if options.otlp_ca_file.is_some() => Err(TransportError::CaOverGrpc),
            OtlpProtocol::Grpc => Transport::grpc(),
        }
        .map_err(error)?;
        let runner = transport.runner();
        let queue = QueueOptions {
            capacity: options.max_queue,
            interval: options.export_interval,
            max_batch: options.max_queue.clamp(1, 512),
        };
        let base = endpoint.trim_end_matches('/');
        let mut exporter = span_exporter(&transport, endpoint, options, timeout)?;
        exporter.set_resource(&sdk_resource);
        let spans = Arc::new(span_queue(exporter, runner.clone(), queue).map_err(error)?);
        let logger = if options.export_logs || options.export_events {
            let logs = log_exporter(&transport, endpoint, options, timeout)?;
            Some(
                SdkLoggerProvider::builder()
                    .with_log_processor(QueuedLogs::start(logs, runner, queue).map_err(error)?)
                    .with_resource(sdk_resource)
                    .build(),
            )
        } else {
            None
        };
        let metrics = MetricsTarget {
            transport,
            endpoint: base.to_owned(),
            headers: options.otlp_headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            interval: options.metrics_interval,
            resource,
        };
        Ok(Exporters { spans, logger, metrics })
    }
}

/// The span exporter: `/v1/traces` under the endpoint over HTTP, the endpoint itself over gRPC.
fn span_exporter(
    transport: &Transport,
    endpoint: &str,
    options: &TelemetryOptions,
    timeout: Duration,
) -> Result<SpanExporter, TelemetryError> {
    match transport {
        Transport::Http(client) => SpanExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_headers(options.otlp_headers.clone())
            .with_timeout(timeout)
            .build(),
        Transport::Grpc(_) => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_metadata(metadata(&options.otlp_headers)?)
            .with_timeout(timeout)
            .build(),
    }
    .map_err(error)
}

/// The log exporter: `/v1/logs` under the endpoint over HTTP, the endpoint itself over gRPC.
fn log_exporter(
    transport: &Transport,
    endpoint: &str,
    options: &TelemetryOptions,
    timeout: Duration,
) -> Result<LogExporter, TelemetryError> {
    match transport {
        Transport::Http(client) => LogExporter::builder()
            .with_http()
            .with_http_client(client.clone())
            .with_endpoint(format!("{}/v1/logs", endpoint.trim_end_matches('/')))
            .with_headers(options.otlp_headers.clone())
            .with_timeout(timeout)
            .build(),
        Transport::Grpc(_) => LogExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_metadata(metadata(&options.otlp_headers)?)
            .with_timeout(timeout)
            .build(),
    }
    .map_err(error)
}

fn metadata(headers: &HashMap<String, String>) -> Result<MetadataMap, TelemetryError> {
    let mut map = http::HeaderMap::new();
    for (key, value) in headers {
        let name = http::HeaderName::try_from(key.as_str()).map_err(error)?;
        map.insert(name, http::HeaderValue::try_from(value.as_str()).map_err(error)?);
    }
    Ok(MetadataMap::from_headers(map))
}

/// `service.name`, `service.version` and `service.instance.id`.
fn resource_attributes(options: &TelemetryOptions) -> Vec<(String, String)> {
    vec![
        ("service.name".into(), options.service_name.clone()),
        ("service.version".into(), options.service_version.clone()),
        ("service.instance.id".into(), format!("{}-{}", hostname(), std::process::id())),
    ]
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn otlp_over_https_speaks_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("https://{}", listener.local_addr().unwrap());
        let received = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut head = [0u8; 2];
            stream.read_exact(&mut head).unwrap();
            head
        });
        let options = TelemetryOptions {
            export_logs: false,
            export_events: false,
            metrics_interval: Duration::from_secs(3600),
            ..TelemetryOptions::default()
        };
        // Builds the span exporter's HTTP client and, below, the metric exporter's.
        let exporters = Exporters::start(&endpoint, &options).unwrap();
        let metrics = MetricsExporter::start(Arc::new(Metrics::new()), exporters.metrics).unwrap();
        metrics.shutdown(); // one last export, which the listener cuts short
                            // A TLS record of type handshake (22), version 3.x: a ClientHello.
        assert_eq!(received.join().unwrap(), [0x16, 0x03]);
        exporters.spans.shutdown().unwrap();
    }
}
