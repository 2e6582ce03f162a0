//! The HTTP API: OpenAI-compatible routes, KServe v2, and operations.

pub(crate) mod extract;
mod feedback;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod health;
mod kserve;
mod kserve_binary;
pub(crate) mod ocr;
mod openai;
pub(crate) mod translate;

use axum::routing::{get, post};
use axum::Router;

use crate::state::SharedState;

/// Every route, with state applied; `stack::build` adds the middleware.
/// `/metrics` is among them unless `server.metrics_listen` serves it
/// elsewhere ([`metrics_routes`]); then it is an unknown route here (404).
pub fn routes(state: SharedState) -> Router {
    let limit = usize::try_from(state.config.server.max_body_bytes).unwrap_or(usize::MAX);
    let router = match state.config.server.metrics_listen {
        None => Router::new().route("/metrics", get(health::metrics)),
        Some(_) => Router::new(),
    };
    router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/models", get(openai::models::list))
        .route("/v1/models/{*model}", get(openai::models::retrieve))
        .route("/v1/chat/completions", post(openai::chat::completions))
        .route("/v1/embeddings", post(openai::embeddings::create))
        .route("/v1/audio/transcriptions", post(openai::audio::transcriptions))
        .route("/v1/audio/translations", post(openai::audio::translations))
        .route("/v1/moderations", post(openai::moderations::create))
        .route("/v1/ocr", post(ocr::create))
        .route("/v1/feedback", post(feedback::create))
        .route("/v2/translate", post(translate::translate))
        .route("/v2/languages", get(translate::languages).post(translate::languages))
        .route("/v2/usage", get(translate::usage).post(translate::usage))
        .route("/v2", get(kserve::server_metadata))
        .route("/v2/health/live", get(kserve::live))
        .route("/v2/health/ready", get(kserve::ready))
        .route("/v2/models/{model}", get(kserve::model_metadata))
        .route("/v2/models/{model}/ready", get(kserve::model_ready))
        .route("/v2/models/{model}/infer", post(kserve::infer))
        .route("/v2/models/{model}/versions/{version}", get(kserve::model_metadata_versioned))
        .route("/v2/models/{model}/versions/{version}/ready", get(kserve::model_ready_versioned))
        .route("/v2/models/{model}/versions/{version}/infer", post(kserve::infer_versioned))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// `/metrics` alone, for the listener of `server.metrics_listen`.
pub fn metrics_routes(state: SharedState) -> Router {
    Router::new().route("/metrics", get(health::metrics)).with_state(state)
}
