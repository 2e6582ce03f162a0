//! infergate's gateway: the HTTP surface, middleware, configuration and the
//! wiring from requests to the scheduler and backends.

pub mod api;
pub mod auth;
mod call;
pub mod config;
pub mod context;
pub mod error;
pub mod layers;
pub mod runner;
pub mod server;
pub mod stack;
pub mod state;
#[cfg(test)]
mod test_util;

use std::sync::Arc;

use axum::Router;
use infergate_otel::Metrics;

use crate::config::Config;
use crate::state::{AppState, SharedState};

/// Start every model and build the complete service. Must run inside a
/// tokio runtime; fails when a model cannot load.
pub fn app(config: Config) -> Result<(Router, SharedState), String> {
    let state = AppState::start(config, Arc::new(Metrics::new()))?;
    let router = stack::build(api::routes(state.clone()), state.clone());
    Ok((router, state))
}
