//! Telemetry for infergate: logs and OTLP export of traces, logs and metrics, the names of every
//! span and metric, and the Prometheus registry the gateway serves on `/metrics`.
//!
//! Names live here, once, so dashboards, tests and code agree on them.

pub mod genai;
pub mod metrics;
pub mod names;
pub mod openmetrics;
mod otlp_metrics;
mod processors;
pub mod propagation;
pub mod queue;
mod spans;
pub mod telemetry;

pub use metrics::{Metrics, RequestLabels};
pub use telemetry::{init, LogFormat, OtlpProtocol, TelemetryGuard, TelemetryOptions};
