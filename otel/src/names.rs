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
/// The Gateway API Inference Extension's model-server gauges, per model, so
/// that an Endpoint Picker can weigh infergate replicas as it weighs vLLM's:
/// its protocol's TotalQueuedRequests is [`QUEUE_DEPTH`] (as
/// `vllm:num_requests_waiting`), TotalRunningRequests this one (as
/// `vllm:num_requests_running`), KVCacheUtilization the next (as
/// `vllm:kv_cache_usage_perc`). Jobs the model is running now: in its running batches, or the sequences
/// of a generative model's running sets.
pub const MODEL_RUNNING_REQUESTS: &str = "infergate_model_running_requests";
/// How full the model is, 0–1: the share of its KV budget its running
/// sequences hold (generative models), or running batches ÷ `concurrency`.
pub const MODEL_KV_CACHE_UTILIZATION: &str = "infergate_model_kv_cache_utilization";
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
/// Jobs a model could not take that its fallback ran, by fallback and reason
/// (counter, `_total` added on encode).
pub const FALLBACKS: &str = "infergate_fallbacks";

/// A remote model's replica in rotation (1) or ejected (0), per replica.
pub const UPSTREAM_REPLICA_UP: &str = "infergate_upstream_replica_up";
/// Requests outstanding at a remote model's replica.
pub const UPSTREAM_OUTSTANDING: &str = "infergate_upstream_outstanding";
/// Requests sent again to another replica (counter, `_total` added on encode).
pub const UPSTREAM_RETRIES: &str = "infergate_upstream_retries";
/// Replicas taken out of rotation, by reason (counter, `_total` added on encode).
pub const UPSTREAM_EJECTIONS: &str = "infergate_upstream_ejections";

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

/// Requests per tenant and model by outcome (`ok`, `error`, `rate_limited`, `quota_exceeded`).
pub const TENANT_REQUESTS: &str = "infergate_tenant_requests";
/// Tokens per tenant and model, by `type` (`input`, `output`).
pub const TENANT_TOKENS: &str = "infergate_tenant_tokens";
/// Seconds of audio per tenant and model.
pub const TENANT_AUDIO_SECONDS: &str = "infergate_tenant_audio_seconds";
/// Characters translated per tenant and model.
pub const TENANT_CHARACTERS: &str = "infergate_tenant_characters";
/// Requests refused by a tenant limit, by tenant and `limit` (its config key).
pub const TENANT_LIMITED: &str = "infergate_tenant_limited";
/// Limit store operations that failed or timed out.
pub const STORE_ERRORS: &str = "infergate_store_errors";

/// Cache look-ups of cacheable models by `model` and `result` (`hit`, `miss`,
/// `coalesced`, `bypass`, `none`) (counter, `_total` added on encode).
pub const CACHE_REQUESTS: &str = "infergate_cache_requests";
/// Bytes of answers a model's response cache holds.
pub const CACHE_BYTES: &str = "infergate_cache_bytes";
/// Answers a model's response cache holds.
pub const CACHE_ENTRIES: &str = "infergate_cache_entries";
/// Answers evicted to keep a model's cache within `max_bytes` (counter).
pub const CACHE_EVICTIONS: &str = "infergate_cache_evictions";

/// Feedback and low-confidence events by `outcome` (`queued`, `dropped`, `failed`) (counter).
pub const FEEDBACK_EVENTS: &str = "infergate_feedback_events";

/// Span names, one per hop of a request (docs/ARCHITECTURE.md). The server span is
/// named `METHOD /route` as the HTTP conventions prescribe.
pub mod spans {
    pub const SERVER: &str = "request";
    pub const DECODE: &str = "decode";
    pub const QUEUE: &str = "queue";
    pub const BATCH: &str = "batch";
    pub const BACKEND_EXECUTE: &str = "backend.execute";
    pub const ENCODE: &str = "encode";
}

/// `gen_ai.operation.name` values: the GenAI conventions' names where they
/// have one (`chat`, `embeddings`), infergate's own otherwise.
pub mod operations {
    pub const CHAT: &str = "chat";
    pub const EMBEDDINGS: &str = "embeddings";
    pub const MODERATION: &str = "moderation";
    pub const OCR: &str = "ocr";
    /// KServe inference.
    pub const INFER: &str = "infer";
    pub const TRANSCRIPTION: &str = "transcription";
    /// Speech to English text, and text translation.
    pub const TRANSLATION: &str = "translation";
}

/// The pipeline's own counters: spans, logs and metric points exported or
/// lost, by signal and outcome (counter, `_total` added on encode).
pub const TELEMETRY_ITEMS: &str = "infergate_telemetry_items";

/// Each Prometheus family's OpenTelemetry name and unit, for OTLP export.
pub const OTLP_METRICS: &[(&str, &str, &str)] = &[
    (HTTP_SERVER_REQUEST_DURATION, "http.server.request.duration", "s"),
    (REQUESTS_IN_FLIGHT, "infergate.requests.in_flight", "{request}"),
    (QUEUE_DEPTH, "infergate.queue.depth", "{job}"),
    (QUEUE_WAIT, "infergate.queue.wait", "s"),
    (BATCH_SIZE, "infergate.batch.size", "{job}"),
    (BACKEND_EXECUTE_DURATION, "infergate.backend.execute.duration", "s"),
    (LATENCY_PREDICTION_ERROR, "infergate.scheduler.prediction_error", "1"),
    (SCHEDULER_REJECTIONS, "infergate.scheduler.rejections", "{job}"),
    (FALLBACKS, "infergate.fallbacks", "{job}"),
    (GENAI_REQUEST_DURATION, "gen_ai.server.request.duration", "s"),
    (GENAI_TTFT, "gen_ai.server.time_to_first_token", "s"),
    (GENAI_TPOT, "gen_ai.server.time_per_output_token", "s"),
    (GENAI_TOKENS, "gen_ai.server.token.usage", "{token}"),
    (DEADLINE_OUTCOMES, "infergate.deadline.outcomes", "{request}"),
    (TELEMETRY_ITEMS, "infergate.telemetry.items", "{item}"),
    (UPSTREAM_REPLICA_UP, "infergate.upstream.replica.up", "1"),
    (UPSTREAM_OUTSTANDING, "infergate.upstream.outstanding", "{request}"),
    (UPSTREAM_RETRIES, "infergate.upstream.retries", "{request}"),
    (UPSTREAM_EJECTIONS, "infergate.upstream.ejections", "{ejection}"),
    (CACHE_REQUESTS, "infergate.cache.requests", "{request}"),
    (CACHE_BYTES, "infergate.cache.bytes", "By"),
    (CACHE_ENTRIES, "infergate.cache.entries", "{entry}"),
    (CACHE_EVICTIONS, "infergate.cache.evictions", "{entry}"),
    (FEEDBACK_EVENTS, "infergate.feedback.events", "{event}"),
];

/// Prometheus label names whose OpenTelemetry attribute names differ.
pub const OTLP_LABELS: &[(&str, &str)] = &[
    ("http_request_method", "http.request.method"),
    ("http_route", "http.route"),
    ("http_response_status_code", "http.response.status_code"),
    ("gen_ai_operation_name", "gen_ai.operation.name"),
    ("gen_ai_request_model", "gen_ai.request.model"),
    ("gen_ai_token_type", "gen_ai.token.type"),
];
