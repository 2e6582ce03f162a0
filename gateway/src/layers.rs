//! The gateway's own middleware, each a small `axum::middleware::from_fn`
//! function; `stack.rs` puts them in order with the tower-http layers.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use infergate_otel::RequestLabels;
use tokio::time::Instant as TokioInstant;

use crate::context::{DeadlineSpec, Received};
use crate::error::{ApiError, ErrorShape, Shaped};
use crate::state::SharedState;

/// Routes that need no API key: health, readiness and metrics.
pub fn is_open_route(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics" | "/v2" | "/v2/health/live" | "/v2/health/ready")
}

/// Make every error response speak its API's error shape: re-render
/// errors for KServe routes, and give a body to errors produced by layers
/// that know nothing of our shapes (404, 405, 413, 408, panics).
pub async fn shape_errors(State(state): State<SharedState>, request: Request, next: Next) -> Response {
    // Shared, not copied: both are read only when the answer is an error.
    let (uri, method) = (request.uri().clone(), request.method().clone());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let path = uri.path();
    let shape = ErrorShape::for_path(path);
    let is_json = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let error = match response.extensions().get::<Shaped>() {
        Some(_) if shape == ErrorShape::OpenAi => return response,
        Some(Shaped(error)) => error.clone(),
        // A handler's own JSON answer (e.g. `/readyz` while draining).
        None if is_json => return response,
        None => {
            Arc::new(ApiError::from_status(status, method.as_str(), path, state.config.server.max_body_bytes))
        }
    };
    let mut shaped = shape.render(&error);
    // Keep headers the inner layers set (`x-request-id`, `allow`, ...).
    for (name, value) in response.headers() {
        if name != http::header::CONTENT_TYPE && name != http::header::CONTENT_LENGTH {
            shaped.headers_mut().entry(name).or_insert_with(|| value.clone());
        }
    }
    shaped
}

/// Admit a request: record `http.server.request.duration` and in-flight
/// requests, map its API key to a tenant (open routes need none) and parse
/// its deadline headers into a [`DeadlineSpec`]. One layer rather than
/// three: each `from_fn` layer clones the rest of the stack and boxes a
/// future per request.
///
/// Streamed responses are measured to their headers; token timing is
/// measured apart. A client that disconnects before its response is counted
/// under status 499 (nginx's "client closed request") and its server span
/// says so.
pub async fn admit(State(state): State<SharedState>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let mut flight = InFlight {
        state: state.clone(),
        start: Instant::now(),
        method: request.method().as_str().to_owned(),
        route,
        status: None,
        // The server span: entered while the request is polled, not when
        // a disconnect drops it.
        span: tracing::Span::current(),
    };
    state.metrics.in_flight.inc();
    let response = match authenticate(&state, &mut request).and_then(|()| deadline(&mut request)) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    };
    flight.status = Some(response.status().as_u16());
    response
}

/// A request being served; dropped when it completes or its client leaves.
struct InFlight {
    state: SharedState,
    start: Instant,
    method: String,
    route: String,
    status: Option<u16>,
    span: tracing::Span,
}

/// What the duration histogram records for a client that went away.
const CLIENT_CLOSED_REQUEST: u16 = 499;

impl Drop for InFlight {
    fn drop(&mut self) {
        let metrics = &self.state.metrics;
        metrics.in_flight.dec();
        let span = &self.span;
        let status = self.status.unwrap_or_else(|| {
            span.record("error.type", "client_disconnected");
            span.record("otel.status_code", "ERROR");
            CLIENT_CLOSED_REQUEST
        });
        let labels = RequestLabels {
            http_request_method: std::mem::take(&mut self.method),
            http_route: std::mem::take(&mut self.route),
            http_response_status_code: status,
        };
        let trace_id = infergate_otel::propagation::trace_id(span);
        metrics.observe_request(&labels, self.start.elapsed().as_secs_f64(), trace_id);
    }
}

/// Map the API key to a tenant; open routes need none.
fn authenticate(state: &SharedState, request: &mut Request) -> Result<(), ApiError> {
    if is_open_route(request.uri().path()) {
        return Ok(());
    }
    let caller = state.tenants.authenticate(request.headers())?;
    request.extensions_mut().insert(caller);
    Ok(())
}

/// Parse the deadline headers into a [`DeadlineSpec`].
fn deadline(request: &mut Request) -> Result<(), ApiError> {
    let now = TokioInstant::now();
    let spec = DeadlineSpec::from_headers(request.headers(), now)?;
    request.extensions_mut().insert(spec);
    request.extensions_mut().insert(Received(now));
    Ok(())
}
