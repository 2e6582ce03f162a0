//! Liveness, readiness and metrics.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, StatusCode};
use serde_json::json;

use crate::state::SharedState;

/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Models are loaded and the instance is not draining.
pub async fn readyz(State(state): State<SharedState>) -> Response {
    match state.readiness.reason() {
        None => Json(json!({ "status": "ready" })).into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": reason }))).into_response(),
    }
}

/// OpenMetrics text exposition (with exemplars linking latencies to traces).
pub async fn metrics(State(state): State<SharedState>) -> Response {
    ([(header::CONTENT_TYPE, infergate_otel::Metrics::CONTENT_TYPE)], state.metrics.encode()).into_response()
}
