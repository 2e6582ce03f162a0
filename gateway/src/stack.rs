//! The middleware stack, built in one place.

use std::any::Any;

use axum::body::Body;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::Request;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::RequestBodyTimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::error::ApiError;
use crate::layers;
use crate::state::SharedState;

/// Wrap the API routes in the gateway's middleware, outermost first:
///
/// 1. **shape errors**: every 4xx/5xx leaves in its API's error format, even
///    those produced by the layers below or by a panic;
/// 2. **catch panic**: a panicking handler becomes a 500 for that request
///    only, never a dropped connection;
/// 3. **request id**: honour or mint `x-request-id` and return it, so logs,
///    traces and clients share one id;
/// 4. **trace**: one span per request, carrying the request id;
/// 5. **metrics**: duration by method, route and status; in-flight gauge;
/// 6. **auth**: API key to tenant and class (`X-Priority` may lower it);
///    health, readiness and metrics stay open;
/// 7. **body limit**: refuse bodies over `server.max_body_bytes` (413) before
///    reading them when `Content-Length` says so, and while reading otherwise;
/// 8. **body timeout**: a client must finish its body within
///    `server.body_read_timeout` (408);
/// 9. **deadline**: `X-Request-Deadline` / `X-Request-Timeout` into the
///    request's deadline (400 when malformed);
///
/// then the router. Header read timeouts and TCP_NODELAY are set on the
/// connection in `server.rs`; the scheduler's admission runs in handlers.
pub fn build(routes: Router, state: SharedState) -> Router {
    let server = &state.config.server;
    let body_limit = usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX);
    let layers = ServiceBuilder::new()
        .layer(from_fn_with_state(state.clone(), layers::shape_errors))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(request_span))
        .layer(from_fn_with_state(state.clone(), layers::track))
        .layer(from_fn_with_state(state.clone(), layers::authenticate))
        .layer(RequestBodyLimitLayer::new(body_limit))
        .layer(RequestBodyTimeoutLayer::new(server.body_read_timeout))
        // The body layers wrap the body type; the router takes plain bodies.
        .map_request(|request: Request<_>| request.map(Body::new))
        .layer(from_fn(layers::deadline));
    routes.layer(layers)
}

/// The request span: method, path (never the query) and request id.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
}

fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".to_owned());
    tracing::error!(%detail, "handler panicked");
    ApiError::Internal { detail }.into_response()
}
