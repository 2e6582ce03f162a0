//! The gateway's errors, and their mapping to HTTP in one place.
//!
//! Handlers and layers return [`ApiError`]; [`ApiError::parts`] decides the
//! status, type, code and retry headers; [`ErrorShape`] writes the body in
//! the API's own format (OpenAI everywhere, KServe under `/v2/models` and
//! `/v2/health`). Internal details go to the log, never to the client.

use std::sync::Arc;
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use infergate_backends::{BackendError, Task};

/// Everything a request can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    InvalidRequest { message: String, param: Option<String> },
    #[error("{message}")]
    InvalidApiKey { message: String, missing: bool },
    #[error("The model '{model}' does not exist or you do not have access to it.")]
    ModelNotFound { model: String },
    /// Feedback on a request id this tenant got no answer for (within the window).
    #[error("No answer to request '{request_id}' within the feedback window.")]
    AnswerNotFound { request_id: String },
    #[error("The model '{model}' serves {task}, not {wanted}.")]
    WrongTask { model: String, task: Task, wanted: Task },
    #[error("Unknown route: {method} {path}")]
    RouteNotFound { method: String, path: String },
    #[error("Method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("Request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("Unsupported Content-Type: expected {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("The request body was not received in time")]
    BodyTimeout,
    #[error("The queue of model '{model}' is full; retry later")]
    QueueFull { model: String, retry_after: Duration },
    #[error("Your share of the queue of model '{model}' is full; retry later")]
    TenantQueueFull { model: String, retry_after: Duration },
    #[error("The request cannot be completed before its deadline at the current load")]
    DeadlineInfeasible { retry_after: Duration, retryable: bool },
    #[error("The request deadline passed before it could be completed")]
    DeadlineExceeded,
    /// A tenant's rate or quota (see [`crate::tenancy::Refusal`]).
    #[error("{}", .0.message())]
    RateLimited(Arc<crate::tenancy::Refusal>),
    /// `[store] on_error = "deny"` while the limit store cannot answer.
    #[error("Rate limits cannot be checked right now; retry later")]
    StoreUnavailable,
    #[error("The server is shutting down; retry on another instance")]
    ShuttingDown,
    #[error("The server is not ready: {reason}")]
    NotReady { reason: &'static str },
    #[error("{}", backend_message(.0))]
    Backend(BackendError),
    /// An unexpected failure; `detail` is logged, not shown.
    #[error("Internal server error")]
    Internal { detail: String },
}

/// How an error is presented, decided once for every variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorParts {
    pub status: StatusCode,
    /// OpenAI's `type`.
    pub kind: &'static str,
    /// OpenAI's `code`.
    pub code: Option<&'static str>,
    pub retry_after: Option<Duration>,
    /// `x-should-retry`, which the OpenAI SDKs honour.
    pub should_retry: Option<bool>,
}

impl ApiError {
    /// A 400 about one parameter.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { message: message.into(), param: Some(param.into()) }
    }

    /// A 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest { message: message.into(), param: None }
    }

    /// The one mapping from error to HTTP.
    pub fn parts(&self) -> ErrorParts {
        use ApiError as E;
        let (status, kind, code) = match self {
            E::InvalidRequest { .. } => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            E::InvalidApiKey { missing: true, .. } => {
                (StatusCode::UNAUTHORIZED, "invalid_request_error", Some("missing_api_key"))
            }
            E::InvalidApiKey { missing: false, .. } => {
                (StatusCode::UNAUTHORIZED, "invalid_request_error", Some("invalid_api_key"))
            }
            E::ModelNotFound { .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", Some("model_not_found"))
            }
            E::AnswerNotFound { .. } => {
                (StatusCode::NOT_FOUND, "invalid_request_error", Some("request_not_found"))
            }
            E::WrongTask { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", Some("model_not_supported"))
            }
            E::RouteNotFound { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", Some("unknown_url")),
            E::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", Some("method_not_allowed"))
            }
            E::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", Some("payload_too_large"))
            }
            E::UnsupportedMediaType { .. } => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_request_error", Some("unsupported_media_type"))
            }
            E::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "invalid_request_error", Some("body_timeout")),
            E::QueueFull { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("queue_full")),
            E::TenantQueueFull { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", Some("tenant_queue_full"))
            }
            E::DeadlineInfeasible { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("deadline_infeasible"))
            }
            E::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "timeout_error", Some("deadline_exceeded")),
            E::RateLimited(r) if r.quota => {
                (StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", Some("insufficient_quota"))
            }
            E::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "requests", Some("rate_limit_exceeded")),
            E::StoreUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("rate_limiter_unavailable"))
            }
            E::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("shutting_down")),
            E::NotReady { .. } => (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("not_ready")),
            E::Backend(BackendError::InvalidInput(_)) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", Some("invalid_input"))
            }
            E::Backend(BackendError::Refused { status, .. }) => (
                StatusCode::from_u16(*status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_REQUEST),
                "invalid_request_error",
                Some("upstream_refused"),
            ),
            E::Backend(BackendError::UpstreamAuth(_)) => {
                (StatusCode::BAD_GATEWAY, "server_error", Some("upstream_auth"))
            }
            E::Backend(BackendError::UpstreamBusy { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "server_error", Some("upstream_rate_limited"))
            }
            E::Backend(BackendError::Failed(_) | BackendError::Disconnected(_)) => {
                (StatusCode::BAD_GATEWAY, "server_error", Some("backend_error"))
            }
            // Only a client that has gone away or whose deadline passed gets
            // here; nobody reads it, but the log and metrics do.
            E::Backend(BackendError::Cancelled) => {
                (StatusCode::GATEWAY_TIMEOUT, "timeout_error", Some("cancelled"))
            }
            E::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        };
        let (retry_after, should_retry) = match self {
            E::QueueFull { retry_after, .. } | E::TenantQueueFull { retry_after, .. } => {
                (Some(*retry_after), Some(true))
            }
            E::DeadlineInfeasible { retry_after, retryable } => (Some(*retry_after), Some(*retryable)),
            E::RateLimited(r) => (Some(r.retry_after), Some(!r.quota)),
            E::ShuttingDown | E::NotReady { .. } | E::StoreUnavailable => {
                (Some(Duration::from_secs(1)), Some(true))
            }
            E::Backend(BackendError::Failed(_) | BackendError::Disconnected(_)) => (None, Some(true)),
            E::Backend(BackendError::UpstreamBusy { retry_after }) => (Some(*retry_after), Some(true)),
            E::Backend(BackendError::UpstreamAuth(_)) => (None, Some(false)),
            E::DeadlineExceeded => (None, Some(false)),
            _ if status.is_client_error() => (None, Some(false)),
            _ => (None, None),
        };
        ErrorParts { status, kind, code, retry_after, should_retry }
    }

    /// The `param` field, where one parameter is at fault.
    pub fn param(&self) -> Option<&str> {
        match self {
            ApiError::InvalidRequest { param, .. } => param.as_deref(),
            ApiError::ModelNotFound { .. } | ApiError::WrongTask { .. } => Some("model"),
            ApiError::AnswerNotFound { .. } => Some("request_id"),
            ApiError::Backend(BackendError::Refused { param, .. }) => param.as_deref(),
            _ => None,
        }
    }

    /// The `code` field: an upstream's own code for its refusal, else ours.
    pub fn code(&self) -> Option<&str> {
        match self {
            ApiError::Backend(BackendError::Refused { code: Some(code), .. }) => Some(code),
            _ => self.parts().code,
        }
    }

    /// Synthesise an error for a response some layer produced without one
    /// (the router's 404 and 405, tower-http's 413 and 408, a panic's 500).
    pub fn from_status(status: StatusCode, method: &str, path: &str, body_limit: u64) -> Self {
        match status {
            StatusCode::NOT_FOUND => {
                ApiError::RouteNotFound { method: method.to_owned(), path: path.to_owned() }
            }
            StatusCode::METHOD_NOT_ALLOWED => {
                ApiError::MethodNotAllowed { method: method.to_owned(), path: path.to_owned() }
            }
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge { limit: body_limit },
            StatusCode::REQUEST_TIMEOUT => ApiError::BodyTimeout,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ApiError::UnsupportedMediaType { expected: "application/json" }
            }
            s if s.is_client_error() => ApiError::bad_request(s.canonical_reason().unwrap_or("Bad request")),
            s => ApiError::Internal { detail: format!("unshaped {s} response") },
        }
    }
}

/// What a client reads of a backend's failure: the model's own words for a
/// request it cannot take, a general statement otherwise (the details, which
/// may name upstream servers, go to the log and the span).
fn backend_message(error: &BackendError) -> std::borrow::Cow<'_, str> {
    match error {
        BackendError::InvalidInput(message) | BackendError::Refused { message, .. } => message.into(),
        BackendError::UpstreamAuth(_) => "The model's server refused the gateway's credentials".into(),
        BackendError::UpstreamBusy { .. } => "The model's servers are rate limiting; retry later".into(),
        BackendError::Failed(_) => "The model's backend failed; retry later".into(),
        BackendError::Disconnected(_) => "The model's backend disconnected; retry later".into(),
        BackendError::Cancelled => "The request was cancelled".into(),
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        ApiError::Backend(e)
    }
}

/// The error body format of the API a route belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
    /// `{"error": "message"}`
    KServe,
    /// `{"message": "…"}`, with 403 for a bad key (DeepL's clients read it
    /// as an authorization failure).
    DeepL,
}

impl ErrorShape {
    /// The shape for a request path.
    pub fn for_path(path: &str) -> Self {
        if ["/v2/translate", "/v2/languages", "/v2/usage"].contains(&path) {
            return ErrorShape::DeepL;
        }
        let kserve = path == "/v2"
            || path == "/v2/"
            || path.starts_with("/v2/models")
            || path.starts_with("/v2/health")
            || path.starts_with("/v2/repository");
        if kserve {
            ErrorShape::KServe
        } else {
            ErrorShape::OpenAi
        }
    }

    /// The complete response for an error in this shape.
    pub fn render(self, error: &ApiError) -> Response {
        let parts = error.parts();
        // Failures of ours or of a backend are worth a warning; refusals and
        // missed deadlines are expected under load (they are counted in
        // metrics and traced), and a warning per shed request would flood
        // the log exactly when the gateway is busiest.
        match error {
            ApiError::Internal { .. }
            | ApiError::Backend(
                BackendError::Failed(_) | BackendError::Disconnected(_) | BackendError::UpstreamAuth(_),
            ) => {
                tracing::warn!(error = ?error, status = parts.status.as_u16(), "request failed")
            }
            _ if parts.status.is_server_error() => {
                tracing::debug!(error = ?error, status = parts.status.as_u16(), "request refused")
            }
            _ => {}
        }
        let body = match self {
            ErrorShape::OpenAi => serde_json::json!({
                "error": {
                    "message": error.to_string(),
                    "type": parts.kind,
                    "param": error.param(),
                    "code": error.code(),
                }
            }),
            ErrorShape::KServe => serde_json::json!({ "error": error.to_string() }),
            ErrorShape::DeepL => serde_json::json!({ "message": error.to_string() }),
        };
        let status = match (self, error) {
            (ErrorShape::DeepL, ApiError::InvalidApiKey { .. }) => http::StatusCode::FORBIDDEN,
            // DeepL's "Quota exceeded" (its clients raise QuotaExceededException).
            (ErrorShape::DeepL, ApiError::RateLimited(r)) if r.quota => {
                http::StatusCode::from_u16(456).unwrap_or(http::StatusCode::TOO_MANY_REQUESTS)
            }
            _ => parts.status,
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(after) = parts.retry_after {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            headers.insert("retry-after-ms", HeaderValue::from(after.as_millis().max(1) as u64));
        }
        // A body refused by size may not have been read: the connection
        // closes after this answer, and saying so keeps the client from
        // reusing it (a reused one would fail its next request).
        if matches!(error, ApiError::PayloadTooLarge { .. }) {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if let ApiError::RateLimited(refusal) = error {
            refusal.headers.apply(headers);
        }
        if let Some(retry) = parts.should_retry {
            headers.insert("x-should-retry", HeaderValue::from_static(if retry { "true" } else { "false" }));
        }
        response.extensions_mut().insert(Shaped(Arc::new(error.clone())));
        response
    }
}

/// Marks a response whose body is already an API error, carrying the error
/// so an outer layer can re-render it in another shape.
#[derive(Debug, Clone)]
pub struct Shaped(pub Arc<ApiError>);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorShape::OpenAi.render(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_style_guide() {
        let cases = [
            (ApiError::QueueFull { model: "m".into(), retry_after: Duration::from_millis(200) }, 429),
            (ApiError::DeadlineExceeded, 504),
            (ApiError::Backend(BackendError::Failed("x".into())), 502),
            (ApiError::bad_request("x"), 400),
            (ApiError::PayloadTooLarge { limit: 1 }, 413),
            (ApiError::UnsupportedMediaType { expected: "application/json" }, 415),
            (ApiError::ModelNotFound { model: "m".into() }, 404),
            (ApiError::AnswerNotFound { request_id: "r".into() }, 404),
            (ApiError::ShuttingDown, 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.parts().status.as_u16(), status, "{error:?}");
        }
    }

    #[test]
    fn retry_headers_are_set_where_they_apply() {
        let response = ApiError::QueueFull { model: "m".into(), retry_after: Duration::from_millis(200) }
            .into_response();
        assert_eq!(response.headers()["retry-after"], "1");
        assert_eq!(response.headers()["x-should-retry"], "true");
        let response = ApiError::invalid("model", "bad").into_response();
        assert_eq!(response.headers()["x-should-retry"], "false");
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let error = ApiError::Internal { detail: "secret path /etc/x".into() };
        assert_eq!(error.to_string(), "Internal server error");
        for detail in [
            BackendError::Failed("upstream http://u:key@10.0.0.1:80 answered 500".into()),
            BackendError::Disconnected("upstream gpu-1:8000: connection reset".into()),
            BackendError::UpstreamAuth("gpu-1:8000 answered 401".into()),
        ] {
            let error = ApiError::Backend(detail);
            assert!(
                !error.to_string().contains("10.0.0.1") && !error.to_string().contains("gpu-1"),
                "{error}"
            );
        }
    }

    #[test]
    fn upstream_answers_map_to_the_gateway_statuses() {
        let auth = ApiError::Backend(BackendError::UpstreamAuth("x".into()));
        assert_eq!((auth.parts().status.as_u16(), auth.parts().code), (502, Some("upstream_auth")));
        let busy = ApiError::Backend(BackendError::UpstreamBusy { retry_after: Duration::from_secs(7) });
        let response = busy.clone().into_response();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "7");
        let refused = ApiError::Backend(BackendError::Refused {
            status: 422,
            message: "'tools' is not supported".into(),
            param: Some("tools".into()),
            code: Some("unsupported_parameter".into()),
        });
        assert_eq!(refused.parts().status.as_u16(), 422);
        assert_eq!((refused.param(), refused.code()), (Some("tools"), Some("unsupported_parameter")));
        let odd = ApiError::Backend(BackendError::Refused {
            status: 302,
            message: "m".into(),
            param: None,
            code: None,
        });
        assert_eq!(odd.parts().status.as_u16(), 400);
    }

    #[test]
    fn a_body_refused_by_size_closes_the_connection() {
        let response = ErrorShape::OpenAi.render(&ApiError::PayloadTooLarge { limit: 10 });
        assert_eq!(response.headers()[header::CONNECTION], "close");
        let other = ErrorShape::OpenAi.render(&ApiError::bad_request("x"));
        assert!(other.headers().get(header::CONNECTION).is_none());
    }

    #[test]
    fn deepl_paths_get_deepl_errors() {
        assert_eq!(ErrorShape::for_path("/v2/translate"), ErrorShape::DeepL);
        let error = ApiError::InvalidApiKey { message: "no".into(), missing: false };
        assert_eq!(ErrorShape::DeepL.render(&error).status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn kserve_paths_get_kserve_errors() {
        assert_eq!(ErrorShape::for_path("/v2/models/x/infer"), ErrorShape::KServe);
        assert_eq!(ErrorShape::for_path("/v2/health/ready"), ErrorShape::KServe);
        assert_eq!(ErrorShape::for_path("/v1/chat/completions"), ErrorShape::OpenAi);
        assert_eq!(ErrorShape::for_path("/v2/translate"), ErrorShape::DeepL);
    }
}
