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

/// Prometheus text exposition.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.encode())
        .into_response()
}
