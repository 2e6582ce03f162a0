//! infergate's gateway: the HTTP surface, middleware, configuration and the
//! wiring from requests to the scheduler and backends.

mod api;
mod auth;
mod cache;
mod call;
mod config;
mod context;
mod error;
mod feedback;
mod layers;
mod runner;
mod server;
mod stack;
mod state;
pub mod tenancy;
#[cfg(test)]
mod test_util;
mod tls;

// What the `infergate` binary needs; everything else is the library's own.
#[cfg(any(test, feature = "fuzzing"))]
pub use api::fuzzing;
pub use config::{Config, ConfigError, LogFormatConfig, OtlpProtocolConfig};
pub use feedback::export as export_feedback;
pub use server::{serve, shutdown_signal};
pub use state::{AppState, SharedState, StartError};
pub use tls::Tls;

use std::sync::Arc;

use axum::Router;
use infergate_otel::Metrics;

/// Start every model and build the complete service. Must run inside a
/// tokio runtime; fails when a model cannot load.
pub fn app(config: Config) -> Result<(Router, SharedState), StartError> {
    let state = AppState::start(config, Arc::new(Metrics::new()))?;
    let router = stack::build(api::routes(state.clone()), state.clone());
    Ok((router, state))
}

/// The service of `server.metrics_listen`: `/metrics` alone, without the
/// API's middleware (no key, no request metrics of its own).
pub fn metrics_app(state: SharedState) -> Router {
    api::metrics_routes(state)
}
