//! The middleware stack, built in one place.

use std::any::Any;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::Request;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use axum::extract::MatchedPath;
use infergate_otel::names::spans;
use infergate_otel::propagation;

use crate::error::ApiError;
use crate::layers;
use crate::state::SharedState;

/// Wrap the API routes in the gateway's middleware, outermost first:
///
/// 1. **edge**: honour or mint `x-request-id` and return it, so logs,
///    traces and clients share one id (outside the panic catcher, so even a
///    500 from a panic carries it); every 4xx/5xx leaves in its API's error
///    format, even those produced by the layers below or by a panic;
/// 2. **catch panic**: a panicking handler becomes a 500 for that request
///    only, never a dropped connection;
/// 3. **trace**: one span per request, carrying the request id;
/// 4. **admit** (one layer): duration by method, route and status and the
///    in-flight gauge; API key to tenant and class (`X-Priority` may lower
///    it), health, readiness and metrics staying open; `X-Request-Deadline` /
///    `X-Request-Timeout` into the request's deadline (400 when malformed);
/// 5. **body limit**: refuse bodies over `server.max_body_bytes` (413) before
///    reading them when `Content-Length` says so, and while reading otherwise;
/// 6. **body timeout**: a client must finish its body within
///    `server.body_read_timeout` (408);
///
/// then the router. Header read timeouts and TCP_NODELAY are set on the
/// connection in `server.rs`; the scheduler's admission runs in the call
/// layer (`call/`), in the request's task.
pub fn build(routes: Router, state: SharedState) -> Router {
    let server = &state.config.server;
    let body_limit = usize::try_from(server.max_body_bytes).unwrap_or(usize::MAX);
    let body_timeout = server.body_read_timeout;
    let layers = ServiceBuilder::new()
        .layer(layers::EdgeLayer::new(state.clone()))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(record_response)
                .on_failure(()),
        )
        .layer(layers::AdmitLayer(state.clone()))
        .layer(RequestBodyLimitLayer::new(body_limit))
        // The body layer wraps the body type; the router takes plain bodies,
        // each of which must arrive whole within the timeout (which bounds
        // any wait for its next piece as well).
        .map_request(move |request: Request<_>| {
            request.map(|body| Body::new(layers::TotalTimeout::new(body, body_timeout)))
        });
    routes.layer(layers)
}

/// The server span (HTTP semantic conventions): named `METHOD /route`,
/// continuing the caller's trace when it sent a `traceparent`. Never the
/// query string or any request content. The call layer fills the `gen_ai.*` fields.
fn request_span<B>(request: &Request<B>) -> tracing::Span {
    let id = request.headers().get(crate::layers::REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str());
    // Known methods as they are; any other as `_OTHER` (span name `HTTP`).
    let method = layers::method_label(request.method());
    let name = if method == "_OTHER" { "HTTP" } else { method };
    let span = tracing::info_span!(
        spans::SERVER,
        otel.name = format_args!("{name} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
        trace_id = tracing::field::Empty,
        error.type = tracing::field::Empty,
        gen_ai.operation.name = tracing::field::Empty,
        gen_ai.request.model = tracing::field::Empty,
        infergate.alias.target = tracing::field::Empty,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
        cache.hit = tracing::field::Empty,
    );
    propagation::continue_trace(&span, request.headers());
    // Log lines inside the request carry its trace id (with traces on).
    if let Some((trace_id, _)) = propagation::ids(&span) {
        span.record("trace_id", trace_id);
    }
    span
}

/// Record the status; 5xx marks the span as an error (4xx is the client's).
fn record_response<B>(response: &http::Response<B>, _latency: std::time::Duration, span: &tracing::Span) {
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if let Some(shaped) = response.extensions().get::<crate::error::Shaped>() {
        span.record("error.type", shaped.0.parts().code.unwrap_or("error"));
    }
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
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

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use http::Request;
    use tower::ServiceExt;

    use super::*;
    use crate::config::Config;

    const CONFIG: &str = r#"
        [auth]
        anonymous_tenant = "anyone"
        [[tenants]]
        name = "anyone"
        [[models]]
        name = "m"
        task = "chat"
        backend = { kind = "synthetic" }
    "#;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[allow(clippy::panic)]
    async fn explode() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panicking_handler_becomes_a_shaped_500() {
        let (_, state) = crate::app(Config::from_toml(CONFIG, Vec::new()).unwrap()).unwrap();
        let routes = Router::new().route("/v1/explode", get(explode)).route("/v2/models/x", get(explode));
        let app = build(routes, state);

        let response =
            app.clone().oneshot(Request::get("/v1/explode").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 500);
        assert!(response.headers().contains_key("x-request-id"));
        let body = body_json(response).await;
        assert_eq!(body["error"]["type"], "server_error");
        assert_eq!(body["error"]["message"], "Internal server error", "the panic message stays in the log");

        let response = app.oneshot(Request::get("/v2/models/x").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), 500);
        assert_eq!(body_json(response).await["error"], "Internal server error");
    }
}
