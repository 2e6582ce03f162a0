//! Telemetry for infergate: log initialisation, the names of every span and
//! metric, and the Prometheus registry the gateway serves on `/metrics`.
//!
//! Names live here, once, so dashboards, tests and code agree on them.

pub mod logging;
pub mod metrics;
pub mod names;

pub use logging::{init_logging, LogFormat};
pub use metrics::{Metrics, RequestLabels};
