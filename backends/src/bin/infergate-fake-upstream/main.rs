//! `infergate-fake-upstream`: a fake GPU inference server for tests and
//! benchmarks of the remote backends. It speaks the OpenAI API
//! (`/v1/chat/completions` JSON and SSE, `/v1/embeddings`, `/v1/models`,
//! `/v1/audio/transcriptions|translations` answering `verbose_json`) and
//! KServe v2 (`/v2/models/{m}/infer`, whose outputs echo the inputs as
//! `OUTPUT<i>`, and health), answers with the synthetic backend's deterministic
//! outputs through a dynamic batcher (`--max-batch` jobs within
//! `--max-delay`, `--base-latency + --per-cost × batch cost` per batch,
//! `--token-interval` between streamed tokens), and injects faults that a
//! test can change while it runs:
//!
//! ```text
//! POST /fault {"mode": "ok" | "error" | "slow" | "hang" | "disconnect",
//!              "error_rate": 0.0, "slow_factor": 10.0}
//! ```
//!
//! `error` answers 500 to everything (health included), `error_rate` fails
//! that share of requests with 500, `slow` multiplies every latency, `hang`
//! never answers (health included), `disconnect` cuts streams halfway and
//! closes the connection of non-streamed requests. `GET /debug/requests`
//! lists the last requests' `traceparent`, `tracestate`, `x-request-id` and
//! `x-request-timeout` headers.
//!
//! Chat requests also go through a GPU server's load model (`load.rs`):
//! `--max-running` slots with a queue behind them, KV-cache use out of
//! `--kv-tokens`, and a prefix cache of `--prefix-cache-tokens` that makes a
//! seen prompt beginning free before the first token; `GET /metrics` shows
//! them as vLLM's gauges (`vllm:num_requests_waiting`, `vllm:num_requests_running`,
//! `vllm:kv_cache_usage_perc`) and prefix-cache counters.

mod load;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use infergate_backends::synthetic::{SyntheticBackend, SyntheticConfig};
use infergate_backends::tensor::Tensor;
use infergate_backends::{
    tokens, AudioTask, Backend, ChatMessage, ChatRequest, EmbeddingInput, EmbeddingsRequest, Event, Item,
    Output, Request, TensorRequest, TranscriptionRequest,
};
use infergate_rng::SharedSplitMix64;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "A fake OpenAI-compatible GPU server with fault injection")]
struct Args {
    /// Address to listen on (any 127.0.0.0/8 address).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Model name it serves (any name is accepted in requests).
    #[arg(long, default_value = "fake-model")]
    model: String,
    /// Fixed time per batch.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    base_latency: Duration,
    /// Time per unit of batch cost (tokens).
    #[arg(long, default_value = "10us", value_parser = humantime::parse_duration)]
    per_cost: Duration,
    /// Time between streamed tokens.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    token_interval: Duration,
    /// Most requests in one batch.
    #[arg(long, default_value_t = 16)]
    max_batch: usize,
    /// Longest wait for a batch to fill.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    max_delay: Duration,
    /// Initial fault mode (see POST /fault).
    #[arg(long, default_value = "ok")]
    fault: String,
    /// Share of requests failed with 500.
    #[arg(long, default_value_t = 0.0)]
    error_rate: f64,
    /// Chat requests running at once; more wait in the queue (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_running: usize,
    /// KV-cache tokens, for `vllm:kv_cache_usage_perc` (each running chat
    /// request holds its prompt plus its allowed output).
    #[arg(long, default_value_t = 65_536)]
    kv_tokens: usize,
    /// Prompt tokens the prefix cache holds (0: none); cached tokens cost
    /// nothing before the first token.
    #[arg(long, default_value_t = 0)]
    prefix_cache_tokens: usize,
}

/// Faults in force, changed by `POST /fault`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
struct Faults {
    #[serde(default = "ok")]
    mode: String,
    #[serde(default)]
    error_rate: f64,
    #[serde(default = "ten")]
    slow_factor: f64,
}

fn ok() -> String {
    "ok".into()
}
fn ten() -> f64 {
    10.0
}

struct Upstream {
    model: String,
    faults: Mutex<Faults>,
    jobs: mpsc::UnboundedSender<Item>,
    seen: Mutex<VecDeque<Value>>,
    counts: Mutex<std::collections::BTreeMap<String, u64>>,
    rolls: SharedSplitMix64,
    address: SocketAddr,
    load: load::Load,
}

type Shared = Arc<Upstream>;

impl Upstream {
    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// A deterministic roll in [0, 1) per request.
    fn roll(&self) -> f64 {
        self.rolls.next_u64() as f64 / u64::MAX as f64
    }

    fn record(&self, path: &str, headers: &HeaderMap) {
        *self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default() += 1;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut seen = self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() == 256 {
            seen.pop_front();
        }
        seen.push_back(json!({
            "path": path,
            "traceparent": header("traceparent"),
            "tracestate": header("tracestate"),
            "x_request_id": header("x-request-id"),
            "x_request_timeout": header("x-request-timeout"),
            "authorization": header("authorization"),
        }));
    }

    /// The fault's answer before any work, if it has one.
    async fn refuse(&self) -> Option<Response> {
        let faults = self.faults();
        match faults.mode.as_str() {
            "error" => Some(error(StatusCode::INTERNAL_SERVER_ERROR, "fault injection: error")),
            "hang" => {
                std::future::pending::<()>().await;
                None
            }
            _ if self.roll() < faults.error_rate => {
                Some(error(StatusCode::INTERNAL_SERVER_ERROR, "fault injection: error_rate"))
            }
            _ => None,
        }
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": {"message": message, "type": "server_error", "code": null}})))
        .into_response()
}

/// Collects jobs into batches and runs them on the synthetic backend.
async fn batcher(
    backend: Arc<SyntheticBackend>,
    mut jobs: mpsc::UnboundedReceiver<Item>,
    max: usize,
    delay: Duration,
) {
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + delay;
        while batch.len() < max {
            match tokio::time::timeout_at(until, jobs.recv()).await {
                Ok(Some(item)) => batch.push(item),
                _ => break,
            }
        }
        let backend = backend.clone();
        tokio::spawn(async move { backend.execute(batch).await });
    }
}

#[derive(Debug, Deserialize)]
struct ChatBody {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Value>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Value>,
    /// With tools the answer calls the first one, its arguments
    /// `{"text": <the generated text>}`, as vLLM's auto tool choice does.
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
}

/// The fields an answer adds beyond text, as vLLM and OpenAI write them.
struct Extras {
    /// The called tool's name.
    tool: Option<String>,
    logprobs: bool,
}

impl Extras {
    fn of(body: &ChatBody) -> Self {
        let tool = body
            .tools
            .as_ref()
            .and_then(|t| t.first())
            .map(|t| t["function"]["name"].as_str().unwrap_or("tool").to_owned());
        Extras { tool, logprobs: body.logprobs == Some(true) }
    }

    fn finish_reason<'a>(&self, reason: &'a str) -> &'a str {
        if self.tool.is_some() {
            "tool_calls"
        } else {
            reason
        }
    }

    fn logprobs(&self, pieces: &[&str]) -> Value {
        if !self.logprobs {
            return Value::Null;
        }
        let content: Vec<Value> = pieces
            .iter()
            .map(|p| json!({"token": p, "logprob": -0.25, "bytes": p.as_bytes(), "top_logprobs": []}))
            .collect();
        json!({ "content": content })
    }

    /// The whole answer's message.
    fn message(&self, text: &str) -> Value {
        match &self.tool {
            Some(name) => json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": "call_fake0", "type": "function",
                "function": {"name": name, "arguments": json!({"text": text}).to_string()},
            }]}),
            None => json!({"role": "assistant", "content": text}),
        }
    }

    /// The delta of one streamed piece; `first` opens the tool call.
    fn delta(&self, piece: &str, first: bool) -> Value {
        let Some(name) = &self.tool else { return json!({"content": piece}) };
        // The arguments' JSON in pieces: `{"text": "` + escaped pieces + `"}`.
        let escaped = json!(piece).to_string();
        let escaped = &escaped[1..escaped.len() - 1];
        if first {
            json!({"tool_calls": [{"index": 0, "id": "call_fake0", "type": "function",
                                   "function": {"name": name, "arguments": format!("{{\"text\": \"{escaped}")}}]})
        } else {
            json!({"tool_calls": [{"index": 0, "function": {"arguments": escaped}}]})
        }
    }

    /// What closes the tool call's arguments, if a call is open.
    fn closing(&self, opened: bool) -> Option<Value> {
        (self.tool.is_some()).then(|| {
            let arguments = if opened { "\"}" } else { "{\"text\": \"\"}" };
            json!({"tool_calls": [{"index": 0, "function": {"arguments": arguments}}]})
        })
    }
}

/// Submit a job; its events.
fn submit(
    up: &Upstream,
    request: Request,
    cost: f64,
    cancel: &CancellationToken,
) -> mpsc::UnboundedReceiver<Event> {
    let (events, rx) = mpsc::unbounded_channel();
    let _ = up.jobs.send(Item {
        request,
        cost,
        cancel: cancel.clone(),
        events,
        deadline: None,
        span: tracing::Span::none(),
        forwarded: Default::default(),
    });
    rx
}

async fn slow(up: &Upstream) {
    let faults = up.faults();
    if faults.mode == "slow" {
        tokio::time::sleep(Duration::from_millis((20.0 * faults.slow_factor) as u64)).await;
    }
}

async fn metrics(State(up): State<Shared>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], up.load.metrics(&up.model)).into_response()
}

async fn chat(State(up): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    up.record("/v1/chat/completions", &headers);
    if let Some(refused) = up.refuse().await {
        return refused;
    }
    let body: ChatBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let messages: Vec<ChatMessage> = body
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: m["role"].as_str().unwrap_or("user").to_owned(),
            content: m["content"].as_str().map(str::to_owned).unwrap_or_else(|| m["content"].to_string()),
        })
        .collect();
    let stream = body.stream.unwrap_or(false);
    let extras = Extras::of(&body);
    let include_usage = body.stream_options.as_ref().is_some_and(|o| o["include_usage"] == json!(true));
    let stop = match body.stop {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    let request = ChatRequest {
        messages,
        max_tokens: body.max_completion_tokens.or(body.max_tokens).unwrap_or(64),
        temperature: 0.0,
        top_p: 1.0,
        top_k: None,
        seed: body.seed,
        stop,
        stream,
        json: false,
        passthrough: None,
    };
    let prompt_tokens = request.messages.iter().map(|m| tokens::estimate(&m.content)).sum::<u32>();
    let prompt: String = request.messages.iter().map(|m| format!("{}\n{}\n", m.role, m.content)).collect();
    let kv = prompt_tokens as usize + request.max_tokens as usize;
    let model = body.model.unwrap_or_else(|| up.model.clone());
    slow(&up).await;
    let place = up.load.enter(kv).await;
    // Only what the prefix cache does not hold is computed before the first token.
    let cost = f64::from((prompt_tokens - up.load.cached(&prompt, prompt_tokens)).max(1));
    let cancel = CancellationToken::new();
    let mut events = submit(&up, Request::Chat(request), cost, &cancel);
    let disconnect = up.faults().mode == "disconnect";
    if !stream {
        let _place = place;
        let guard = cancel.drop_guard();
        loop {
            match events.recv().await {
                Some(Event::Delta(_) | Event::Chunk(_)) => continue,
                Some(Event::Done(Output::Chat(c))) if !disconnect => {
                    drop(guard);
                    let pieces: Vec<&str> = c.text.split_inclusive(' ').collect();
                    return Json(json!({
                        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
                        "system_fingerprint": "fp_fake",
                        "choices": [{"index": 0, "message": extras.message(&c.text),
                                     "logprobs": extras.logprobs(&pieces),
                                     "finish_reason": extras.finish_reason(c.finish_reason.as_str())}],
                        "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                                  "total_tokens": c.prompt_tokens + c.completion_tokens},
                    }))
                    .into_response();
                }
                // A body that ends before it is complete: the connection breaks.
                Some(Event::Done(_)) => return broken(),
                Some(Event::Failed(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
                None => return error(StatusCode::INTERNAL_SERVER_ERROR, "job lost"),
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let _place = place;
        let _guard = cancel.drop_guard();
        let chunk = |delta: Value, logprobs: Value, finish: Value| {
            let data = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model,
                              "system_fingerprint": "fp_fake",
                              "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]});
            Bytes::from(format!("data: {data}\n\n"))
        };
        let role = chunk(json!({"role": "assistant", "content": ""}), Value::Null, Value::Null);
        if tx.send(Ok(role)).await.is_err() {
            return;
        }
        let mut sent = 0;
        while let Some(event) = events.recv().await {
            let bytes = match event {
                Event::Delta(d) => {
                    sent += 1;
                    if disconnect && sent == 3 {
                        let _ = tx.send(Err(std::io::Error::other("fault injection: disconnect"))).await;
                        return;
                    }
                    chunk(extras.delta(&d, sent == 1), extras.logprobs(&[&d]), Value::Null)
                }
                Event::Chunk(_) => continue,
                Event::Done(Output::Chat(c)) => {
                    let usage = json!({"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                                       "total_tokens": c.prompt_tokens + c.completion_tokens});
                    if let Some(closing) = extras.closing(sent > 0) {
                        let _ = tx.send(Ok(chunk(closing, Value::Null, Value::Null))).await;
                    }
                    let finish = extras.finish_reason(c.finish_reason.as_str());
                    let last = chunk(json!({}), Value::Null, json!(finish));
                    let _ = tx.send(Ok(last)).await;
                    if include_usage {
                        let usage = json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                                           "model": model, "system_fingerprint": "fp_fake", "choices": [], "usage": usage});
                        let _ = tx.send(Ok(Bytes::from(format!("data: {usage}\n\n")))).await;
                    }
                    Bytes::from_static(b"data: [DONE]\n\n")
                }
                Event::Done(_) => break,
                Event::Failed(e) => {
                    Bytes::from(format!("data: {}\n\n", json!({"error": {"message": e.to_string()}})))
                }
            };
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(tokio_stream_from(rx)))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

/// A response whose body fails: hyper closes the connection mid-body.
fn broken() -> Response {
    let stream = futures_util::stream::once(async {
        Err::<Bytes, _>(std::io::Error::other("fault injection: disconnect"))
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| error(StatusCode::INTERNAL_SERVER_ERROR, "response"))
}

fn tokio_stream_from(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[derive(Debug, Deserialize)]
struct EmbeddingsBody {
    #[serde(default)]
    model: Option<String>,
    input: Value,
}

async fn embeddings(State(up): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    up.record("/v1/embeddings", &headers);
    if let Some(refused) = up.refuse().await {
        return refused;
    }
    let body: EmbeddingsBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let inputs: Vec<EmbeddingInput> = match body.input {
        Value::String(s) => vec![EmbeddingInput::Text(s)],
        Value::Array(a) => {
            a.into_iter().map(|v| EmbeddingInput::Text(v.as_str().unwrap_or_default().to_owned())).collect()
        }
        _ => return error(StatusCode::BAD_REQUEST, "input must be a string or an array of strings"),
    };
    let cost = inputs.len() as f64;
    slow(&up).await;
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let mut events =
        submit(&up, Request::Embeddings(EmbeddingsRequest { inputs, dimensions: None }), cost, &cancel);
    match events.recv().await {
        Some(Event::Done(Output::Embeddings(e))) => {
            if up.faults().mode == "disconnect" {
                return broken();
            }
            let data: Vec<Value> = e
                .vectors
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": v}))
                .collect();
            Json(json!({"object": "list", "data": data, "model": body.model.unwrap_or_else(|| up.model.clone()),
                        "usage": {"prompt_tokens": e.prompt_tokens, "total_tokens": e.prompt_tokens}}))
            .into_response()
        }
        Some(Event::Failed(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "job lost"),
    }
}

async fn transcriptions(
    state: State<Shared>,
    headers: HeaderMap,
    form: axum::extract::Multipart,
) -> Response {
    audio(state, headers, form, AudioTask::Transcribe).await
}

async fn translations(state: State<Shared>, headers: HeaderMap, form: axum::extract::Multipart) -> Response {
    audio(state, headers, form, AudioTask::Translate).await
}

/// OpenAI's audio routes: a multipart `file` (any format the gateway
/// decodes) and `language`, `prompt`, `temperature`; answers `verbose_json`.
async fn audio(
    State(up): State<Shared>,
    headers: HeaderMap,
    mut form: axum::extract::Multipart,
    task: AudioTask,
) -> Response {
    up.record("/v1/audio", &headers);
    if let Some(refused) = up.refuse().await {
        return refused;
    }
    let (mut file, mut language, mut prompt) = (None, None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name().unwrap_or_default().to_owned().as_str() {
            "file" => file = field.bytes().await.ok(),
            "language" => language = field.text().await.ok(),
            "prompt" => prompt = field.text().await.ok(),
            _ => {}
        }
    }
    let Some(file) = file else { return error(StatusCode::BAD_REQUEST, "'file' is required") };
    let pcm = match infergate_backends::audio::decode(
        &file,
        infergate_backends::audio::DecodeLimits { max_seconds: 3600.0, max_sample_rate: 192_000 },
        &|| false,
    ) {
        Ok(pcm) => pcm,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("audio: {e}")),
    };
    let seconds = pcm.seconds();
    let request = TranscriptionRequest {
        pcm: pcm.samples.into(),
        offset: 0.0,
        task,
        language,
        prompt,
        temperature: 0.0,
        timestamps: true,
    };
    slow(&up).await;
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let mut events = submit(&up, Request::Transcription(request), seconds, &cancel);
    match events.recv().await {
        Some(Event::Done(Output::Transcription(t))) => {
            let segments: Vec<Value> = t
                .segments
                .iter()
                // OpenAI's verbose_json carries each segment's confidence.
                .map(|s| {
                    json!({"id": s.id, "start": s.start, "end": s.end, "text": s.text,
                           "avg_logprob": -0.25 - 0.01 * f64::from(s.id), "no_speech_prob": 0.02})
                })
                .collect();
            // OpenAI names the language ("german") where whisper gives its code.
            let language = whisper_rs::get_lang_id(&t.language)
                .and_then(whisper_rs::get_lang_str_full)
                .unwrap_or(&t.language);
            Json(json!({"task": if task == AudioTask::Translate { "translate" } else { "transcribe" },
                        "language": language, "duration": t.duration, "text": t.text, "segments": segments}))
            .into_response()
        }
        Some(Event::Failed(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "job lost"),
    }
}

fn kserve_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

async fn infer(
    State(up): State<Shared>,
    axum::extract::Path(model): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    up.record("/v2/models/infer", &headers);
    if let Some(refused) = up.refuse().await {
        return refused;
    }
    let body: Value = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return kserve_error(StatusCode::BAD_REQUEST, &format!("invalid body: {e}")),
    };
    let inputs = match body["inputs"]
        .as_array()
        .map(|a| a.iter().map(Tensor::from_json).collect::<Result<Vec<_>, _>>())
    {
        Some(Ok(inputs)) => inputs,
        Some(Err(e)) => return kserve_error(StatusCode::BAD_REQUEST, &e.to_string()),
        None => return kserve_error(StatusCode::BAD_REQUEST, "'inputs' is required"),
    };
    let outputs: Vec<String> = body["outputs"]
        .as_array()
        .map(|a| a.iter().filter_map(|o| o["name"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let cost = inputs.iter().map(|t| t.data.len() as f64).sum::<f64>() / 1000.0;
    slow(&up).await;
    let cancel = CancellationToken::new();
    let _guard = cancel.clone().drop_guard();
    let mut events = submit(&up, Request::Tensor(TensorRequest { inputs, outputs }), cost, &cancel);
    match events.recv().await {
        Some(Event::Done(Output::Tensor(t))) => {
            if up.faults().mode == "disconnect" {
                return broken();
            }
            let outputs: Vec<Value> = t.outputs.iter().map(Tensor::to_json).collect();
            Json(json!({ "model_name": model, "outputs": outputs })).into_response()
        }
        Some(Event::Failed(infergate_backends::BackendError::InvalidInput(e))) => {
            kserve_error(StatusCode::BAD_REQUEST, &e)
        }
        Some(Event::Failed(e)) => kserve_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        _ => kserve_error(StatusCode::INTERNAL_SERVER_ERROR, "job lost"),
    }
}

async fn health(State(up): State<Shared>, headers: HeaderMap) -> Response {
    up.record("/health", &headers);
    match up.faults().mode.as_str() {
        "error" => error(StatusCode::SERVICE_UNAVAILABLE, "fault injection: error"),
        "hang" => std::future::pending().await,
        _ => (StatusCode::OK, "ok").into_response(),
    }
}

async fn models(State(up): State<Shared>) -> Response {
    Json(json!({"object": "list", "data": [{"id": up.model, "object": "model", "created": 0, "owned_by": "fake-upstream"}]}))
        .into_response()
}

async fn set_fault(State(up): State<Shared>, Json(faults): Json<Faults>) -> Response {
    if !["ok", "error", "slow", "hang", "disconnect"].contains(&faults.mode.as_str()) {
        return error(StatusCode::BAD_REQUEST, "mode: ok, error, slow, hang or disconnect");
    }
    *up.faults.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = faults.clone();
    eprintln!("fake-upstream {}: faults now {faults:?}", up.address);
    Json(json!({"mode": faults.mode, "error_rate": faults.error_rate, "slow_factor": faults.slow_factor}))
        .into_response()
}

async fn seen(State(up): State<Shared>) -> Response {
    let seen = up.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let counts = up.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Json(json!({"requests": seen.iter().collect::<Vec<_>>(), "counts": counts})).into_response()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = SyntheticConfig {
        base_latency: args.base_latency,
        per_cost: args.per_cost,
        token_interval: args.token_interval,
        ..SyntheticConfig::default()
    };
    let backend = Arc::new(SyntheticBackend::new(&args.model, config));
    let (jobs, queue) = mpsc::unbounded_channel();
    tokio::spawn(batcher(backend, queue, args.max_batch.max(1), args.max_delay));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let address = listener.local_addr()?;
    let faults = Faults { mode: args.fault, error_rate: args.error_rate, slow_factor: 10.0 };
    let up = Arc::new(Upstream {
        model: args.model,
        faults: Mutex::new(faults),
        jobs,
        seen: Mutex::new(VecDeque::new()),
        counts: Mutex::default(),
        rolls: SharedSplitMix64::new(0),
        address,
        load: load::Load::new(args.max_running, args.kv_tokens, args.prefix_cache_tokens),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/audio/transcriptions", post(transcriptions))
        .route("/v1/audio/translations", post(translations))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/v2/health/ready", get(health))
        .route("/v2/health/live", get(health))
        .route("/v2/models/{model}/infer", post(infer))
        .route("/fault", post(set_fault))
        .route("/debug/requests", get(seen))
        .route("/metrics", get(metrics))
        .with_state(up);
    // The address goes to stdout first, so a test can read the port.
    println!("listening on {address}");
    axum::serve(listener, app).await?;
    Ok(())
}
