//! Span and metric names, defined once.
//!
//! Metric names follow the OpenTelemetry semantic conventions where one
//! exists, written the Prometheus way (dots to underscores, unit suffix);
//! infergate's own metrics carry the `infergate_` prefix.

/// `http.server.request.duration` in Prometheus form.
pub const HTTP_SERVER_REQUEST_DURATION: &str = "http_server_request_duration_seconds";
/// Requests being served right now.
pub const REQUESTS_IN_FLIGHT: &str = "infergate_requests_in_flight";
/// Jobs waiting in a model's queue.
pub const QUEUE_DEPTH: &str = "infergate_queue_depth";
/// Time a job waited between submission and dispatch.
pub const QUEUE_WAIT: &str = "infergate_queue_wait_seconds";
/// Jobs per backend call.
pub const BATCH_SIZE: &str = "infergate_batch_size";
/// Backend batch execution time.
pub const BACKEND_EXECUTE_DURATION: &str = "infergate_backend_execute_duration_seconds";
/// Recent mean relative error of the scheduler's batch latency prediction.
pub const LATENCY_PREDICTION_ERROR: &str = "infergate_latency_prediction_error_ratio";
/// Jobs the scheduler refused or dropped, by reason (counter, `_total` added on encode).
pub const SCHEDULER_REJECTIONS: &str = "infergate_scheduler_rejections";

/// `gen_ai.server.request.duration`.
pub const GENAI_REQUEST_DURATION: &str = "gen_ai_server_request_duration_seconds";
/// `gen_ai.server.time_to_first_token`.
pub const GENAI_TTFT: &str = "gen_ai_server_time_to_first_token_seconds";
/// `gen_ai.server.time_per_output_token`.
pub const GENAI_TPOT: &str = "gen_ai_server_time_per_output_token_seconds";
/// Token usage by type (counter, `_total` added on encode).
pub const GENAI_TOKENS: &str = "gen_ai_usage_tokens";
/// Requests with a deadline by outcome: on time (goodput), late, missed.
pub const DEADLINE_OUTCOMES: &str = "infergate_deadline_outcomes";

/// Span names, one per hop of a request (DESIGN.md). The server span is
/// named `METHOD /route` as the HTTP conventions prescribe.
pub mod spans {
    pub const SERVER: &str = "request";
    pub const DECODE: &str = "decode";
    pub const QUEUE: &str = "queue";
    pub const BATCH: &str = "batch";
    pub const BACKEND_EXECUTE: &str = "backend.execute";
    pub const ENCODE: &str = "encode";
}
