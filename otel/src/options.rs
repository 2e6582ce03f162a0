//! What [`crate::init`] is asked to set up: the log format, the OTLP
//! transport and endpoint, sampling and the export queues' sizes.
//!
//! Plain data that only the set-up ([`crate::telemetry`]) reads; the
//! exporters it starts get a [`crate::transport::Transport`] instead, so
//! none of them imports the options or the set-up.

use std::collections::HashMap;
use std::time::Duration;

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
    /// OTLP/HTTP with protobuf bodies (port 4318).
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
    /// `/v1/traces`, `/v1/logs` and `/v1/metrics` are appended;
    /// `http://host:4317` for gRPC). `None`: no export.
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export (authentication).
    pub otlp_headers: HashMap<String, String>,
    /// PEM certificates trusted for an `https://` endpoint besides the
    /// system's roots (a private CA); OTLP/HTTP only.
    pub otlp_ca_file: Option<std::path::PathBuf>,
    /// Fraction of new traces to record; a sampled parent is always followed.
    pub sample_ratio: f64,
    /// Spans, and log records, each buffered for export before new ones are
    /// dropped (and counted).
    pub max_queue: usize,
    /// How often buffered spans and log records are sent; sooner when a
    /// full batch (`max_queue` items, at most 512) is waiting.
    pub export_interval: Duration,
    /// How often metrics are sent.
    pub metrics_interval: Duration,
    /// Send log records over OTLP too (they always go to stderr).
    pub export_logs: bool,
    /// Events of [`crate::events`] go out as OTLP log records (never to stderr).
    pub export_events: bool,
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
            otlp_ca_file: None,
            sample_ratio: 1.0,
            max_queue: 4096,
            export_interval: Duration::from_secs(1),
            metrics_interval: Duration::from_secs(15),
            export_logs: true,
            export_events: false,
            service_name: "infergate".into(),
            service_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}
