//! Telemetry for infergate: logs to stderr, OTLP export of traces, logs and
//! metrics, W3C trace context across process boundaries, the names of every
//! span and metric, and the Prometheus registry the gateway serves on
//! `/metrics`.
//!
//! Names live here, once, so dashboards, tests and code agree on them
//! ([`names`]). That module, [`propagation`] (trace context in and out of a
//! process) and [`genai`] (a model's GenAI series) are public; the rest is
//! reached through the items re-exported below.

pub mod cache;
pub mod events;
pub mod exposition;
pub mod genai;
mod labels;
mod metrics;
pub mod names;
mod openmetrics;
mod options;
mod otlp_metrics;
pub mod pool;
mod processors;
pub mod propagation;
mod queue;
mod spans;
mod telemetry;
pub mod tenants;
mod transport;

pub use labels::{ModelLabels, ReasonLabels, ReplicaLabels, RequestLabels, TraceLabels};
pub use metrics::Metrics;
pub use options::{LogFormat, OtlpProtocol, TelemetryOptions};
pub use telemetry::{init, TelemetryError, TelemetryGuard};
