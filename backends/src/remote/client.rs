//! The remote backend: requests forwarded to upstream replicas in the
//! protocol they speak — OpenAI (chat completions, embeddings, audio
//! transcriptions and translations) or KServe v2 (tensor inference, as
//! Triton serves it).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::future::join_all;
use serde_json::{json, Value};
use tracing::Instrument;

use super::answers::{chat_json, embeddings_json, relay_stream, tensor_json, transcription_json};
use super::config::LoadMetricsConfig;
use super::config::{Protocol, RemoteConfig};
use super::discovery::{discover, Endpoint};
use super::load::Reported;
use super::replicas::{Failure, Lease, Replicas, Want};
use super::transport::{self as http, Client};
use crate::{
    Backend, BackendError, BatchReport, Capabilities, EmbeddingInput, Item, LoadError, ModelInfo, Request,
    Task, UpstreamStats,
};

/// A model served by upstream replicas.
pub(crate) struct RemoteBackend {
    model: String,
    protocol: Protocol,
    config: RemoteConfig,
    replicas: Arc<Replicas>,
    client: Client,
    /// `Bearer <key>` for the upstream, when it wants one.
    api_key: Option<::http::HeaderValue>,
    /// Retry tokens: each request adds `retry_budget`, each retry takes one.
    budget: Mutex<f64>,
    retries: std::sync::atomic::AtomicU64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RemoteBackend {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

impl RemoteBackend {
    /// Start the backend: its heartbeat and, for `dns://` endpoints, its
    /// re-resolution. Must run inside a tokio runtime.
    pub(crate) fn start(model: &str, config: &RemoteConfig, protocol: Protocol) -> Result<Self, LoadError> {
        config.validate()?;
        let endpoints = config.parsed_endpoints()?;
        let api_key = match &config.api_key_env {
            Some(var) => {
                let unset = |_| LoadError::setting("api_key_env", format!("{var} is not set"));
                let key = std::env::var(var).map_err(unset)?;
                let invalid = |_| {
                    LoadError::setting(
                        "api_key_env",
                        format!("{var}: the API key is not a valid header value"),
                    )
                };
                Some(http::bearer(&key).map_err(invalid)?)
            }
            None => None,
        };
        let client = Client::new(config.connect_timeout, super::tls::client_config(config)?);
        let statics: Vec<String> = endpoints
            .iter()
            .filter_map(|e| match e {
                Endpoint::Static(b) => Some(b.clone()),
                Endpoint::Dns { .. } => None,
            })
            .collect();
        let replicas = Arc::new(Replicas::new(statics, config));
        let mut tasks = Vec::new();
        if endpoints.iter().any(|e| matches!(e, Endpoint::Dns { .. })) {
            let (replicas, every) = (replicas.clone(), config.dns_refresh);
            tasks.push(tokio::spawn(async move {
                loop {
                    replicas.update(&discover(&endpoints).await);
                    tokio::time::sleep(every).await;
                }
            }));
        }
        if let Some(load) = &config.load_metrics {
            let upstream = config.upstream_model.clone().unwrap_or_else(|| model.to_owned());
            tasks.push(tokio::spawn(read_load(replicas.clone(), client.clone(), load.clone(), upstream)));
        }
        let (beat_replicas, beat_client, beat_config) = (replicas.clone(), client.clone(), config.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(beat_config.health.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let beats =
                    beat_replicas.all().into_iter().map(|r| {
                        let (client, config) = (&beat_client, &beat_config);
                        async move {
                            let path = config.health.path_for(protocol);
                            let request =
                                r.target.as_ref().ok().and_then(|t| t.join(path).ok()).and_then(|uri| {
                                    ::http::Request::get(uri).body(http::Body::default()).ok()
                                });
                            let ok = match request {
                                Some(request) => {
                                    // The body is read so that the connection is kept.
                                    let beat = async {
                                        let response = client.send(request).await.ok()?;
                                        let ok = response.status().is_success();
                                        http::read_all(response).await.ok().map(|_| ok)
                                    };
                                    let answer = tokio::time::timeout(config.health.interval, beat).await;
                                    answer.ok().flatten() == Some(true)
                                }
                                None => false,
                            };
                            r.heartbeat(ok, config);
                        }
                    });
                join_all(beats).await;
            }
        }));
        Ok(RemoteBackend {
            model: model.to_owned(),
            protocol,
            budget: Mutex::new(10.0),
            retries: std::sync::atomic::AtomicU64::new(0),
            config: config.clone(),
            replicas,
            client,
            api_key,
            tasks,
        })
    }

    fn upstream_model(&self) -> &str {
        self.config.upstream_model.as_deref().unwrap_or(&self.model)
    }

    /// The upstream path and JSON body for an item. A client's chat body is
    /// forwarded as sent, with only the model and the streaming fields
    /// rewritten.
    fn body(&self, request: &Request) -> Result<(&'static str, Payload), BackendError> {
        match request {
            Request::Chat(chat) => {
                let model = json!(self.upstream_model());
                // Usage comes back in a stream's last chunk, for metrics and billing.
                let usage = chat.stream.then(|| json!({"include_usage": true}));
                let Some(original) = &chat.passthrough else {
                    let mut body = json!({
                        "model": model,
                        "messages": chat.messages.iter().map(|m| json!({"role": m.role, "content": m.content})).collect::<Vec<_>>(),
                        "max_tokens": chat.max_tokens,
                        "temperature": chat.temperature,
                        "top_p": chat.top_p,
                        "stream": chat.stream,
                    });
                    if let Some(seed) = chat.seed {
                        body["seed"] = json!(seed);
                    }
                    if !chat.stop.is_empty() {
                        body["stop"] = json!(chat.stop);
                    }
                    if let Some(usage) = usage {
                        body["stream_options"] = usage;
                    }
                    return Ok(("/v1/chat/completions", Payload::json(&body)?));
                };
                let changes =
                    [("model", Some(model)), ("stream", Some(json!(chat.stream))), ("stream_options", usage)];
                let body = crate::json_object::rewrite(original, &changes).map_err(|e| {
                    BackendError::InvalidInput(format!("the request body is not a JSON object: {e}"))
                })?;
                Ok(("/v1/chat/completions", Payload::Json(body.into())))
            }
            Request::Embeddings(e) => {
                let input: Vec<Value> = e
                    .inputs
                    .iter()
                    .map(|i| match i {
                        EmbeddingInput::Text(t) => json!(t),
                        EmbeddingInput::Tokens(ids) => json!(ids),
                    })
                    .collect();
                let mut body =
                    json!({"model": self.upstream_model(), "input": input, "encoding_format": "float"});
                if let Some(d) = e.dimensions {
                    body["dimensions"] = json!(d);
                }
                Ok(("/v1/embeddings", Payload::json(&body)?))
            }
            _ => Err(BackendError::InvalidInput("this remote model serves chat and embeddings only".into())),
        }
    }

    /// An audio job as OpenAI's multipart form: the decoded samples as a
    /// 16 kHz WAV, with `verbose_json` asked for to get segment times.
    fn audio_payload(&self, t: &crate::TranscriptionRequest) -> (String, Payload) {
        let path = match t.task {
            crate::AudioTask::Transcribe => "/v1/audio/transcriptions",
            crate::AudioTask::Translate => "/v1/audio/translations",
        };
        let mut fields = vec![
            ("model", self.upstream_model().to_owned()),
            ("response_format", "verbose_json".to_owned()),
            ("temperature", t.temperature.to_string()),
        ];
        if let (Some(language), crate::AudioTask::Transcribe) = (&t.language, t.task) {
            fields.push(("language", language.clone()));
        }
        if let Some(prompt) = &t.prompt {
            fields.push(("prompt", prompt.clone()));
        }
        let wav = crate::audio::wav_bytes(&t.pcm, crate::audio::SAMPLE_RATE);
        (path.to_owned(), Payload::Audio { wav: Arc::new(wav), fields })
    }

    /// The KServe upstream path and body for an item.
    fn kserve_body(&self, request: &Request) -> Result<(String, Value), BackendError> {
        let Request::Tensor(t) = request else {
            return Err(BackendError::InvalidInput("this remote model serves KServe inference only".into()));
        };
        let mut body =
            json!({ "inputs": t.inputs.iter().map(crate::tensor::Tensor::to_json).collect::<Vec<_>>() });
        if !t.outputs.is_empty() {
            body["outputs"] = t.outputs.iter().map(|name| json!({ "name": name })).collect();
        }
        Ok((format!("/v2/models/{}/infer", self.upstream_model()), body))
    }

    /// Take a retry token, if the budget has one.
    fn may_retry(&self) -> bool {
        let mut budget = self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if *budget >= 1.0 {
            *budget -= 1.0;
            self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    async fn run(&self, item: &Item) -> Result<(), BackendError> {
        {
            let mut budget = self.budget.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *budget = (*budget + self.config.retry_budget).min(10.0);
        }
        let (path, body) = match (&item.request, self.protocol) {
            (Request::Transcription(t), Protocol::OpenAi) => self.audio_payload(t),
            (request, Protocol::OpenAi) => {
                let (path, body) = self.body(request)?;
                (path.to_owned(), body)
            }
            (request, Protocol::KServe) => {
                let (path, body) = self.kserve_body(request)?;
                (path, Payload::json(&body)?)
            }
        };
        let path = path.as_str();
        let want = Want {
            prefix: self.config.prefix_affinity.as_ref().and_then(|a| prefix(&item.request, a.tokens)),
        };
        let mut tried = Vec::new();
        let mut last_error = BackendError::Failed("no upstream replica is available".into());
        loop {
            item.check()?;
            let Some(lease) = self.replicas.pick(&tried, want) else { return Err(last_error) };
            tried.push(lease.replica.clone());
            match self.attempt(item, path, body.clone(), &lease, tried.len() - 1).await {
                Attempt::Answered => return Ok(()),
                Attempt::Final(error) => return Err(error),
                Attempt::Retryable(error) => {
                    last_error = error;
                    if !self.may_retry() {
                        tracing::info!(model = %self.model, "retry budget exhausted");
                        return Err(last_error);
                    }
                }
            }
        }
    }

    /// One try on one replica, inside its CLIENT span (so the replica's
    /// health events land in the request's trace).
    async fn attempt(&self, item: &Item, path: &str, body: Payload, lease: &Lease, retry: usize) -> Attempt {
        let span = tracing::info_span!(
            parent: &item.span,
            "backend.request",
            otel.kind = "client",
            http.request.method = "POST",
            server.address = %lease.replica.name,
            url.path = path,
            http.request.resend_count = retry,
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        self.send(item, path, body, lease, &span).instrument(span.clone()).await
    }

    async fn send(
        &self,
        item: &Item,
        path: &str,
        body: Payload,
        lease: &Lease,
        span: &tracing::Span,
    ) -> Attempt {
        let replica = &lease.replica;
        let unusable = |error: &dyn std::fmt::Display| {
            Attempt::Final(BackendError::Failed(format!("upstream {}: {error}", replica.name)))
        };
        let uri = match replica.target.as_ref().map(|target| target.join(path)) {
            Ok(Ok(uri)) => uri,
            Ok(Err(error)) => return unusable(&error),
            Err(error) => return unusable(error),
        };
        let (content_type, bytes) = match body {
            Payload::Json(bytes) => (::http::HeaderValue::from_static("application/json"), bytes),
            Payload::Audio { wav, fields } => {
                let (content_type, bytes) = http::multipart(&wav, "audio.wav", "audio/wav", &fields);
                match ::http::HeaderValue::try_from(content_type) {
                    Ok(content_type) => (content_type, bytes),
                    Err(error) => {
                        return Attempt::Final(BackendError::Failed(format!("upstream request: {error}")))
                    }
                }
            }
        };
        let mut request = http::post(uri, content_type, bytes, self.api_key.as_ref());
        let headers = request.headers_mut();
        infergate_otel::propagation::inject(span, headers);
        // Without a trace of infergate's own, the client's context goes on as it came.
        if !headers.contains_key(infergate_otel::propagation::TRACEPARENT) {
            for (name, value) in item.forwarded.trace.iter().flat_map(|t| t.iter()) {
                headers.insert(name.clone(), value.clone());
            }
        }
        if let Some(id) =
            item.forwarded.request_id.as_deref().and_then(|id| ::http::HeaderValue::try_from(id).ok())
        {
            headers.insert(crate::REQUEST_ID, id);
        }
        let wait = match item.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                request.headers_mut().insert(crate::REQUEST_TIMEOUT, http::milliseconds(left));
                left
            }
            None => self.config.timeout,
        };
        let start = Instant::now();
        let sent = tokio::select! {
            sent = tokio::time::timeout(wait, self.client.send(request)) => sent,
            () = item.cancel.cancelled() => {
                replica.finished(Err(Failure::Other), &self.config);
                return Attempt::Final(BackendError::Cancelled);
            }
        };
        let response = match sent {
            Err(_) => {
                span.record("error.type", "timeout");
                // A replica that does not answer in time is not ejected at
                // once; its heartbeats decide.
                replica.finished(Err(Failure::Other), &self.config);
                return Attempt::Final(BackendError::Cancelled);
            }
            Ok(Err(error)) => {
                span.record("error.type", "connect");
                tracing::info!(replica = %replica.name, %error, "upstream request failed");
                replica.finished(Err(Failure::Connect), &self.config);
                return Attempt::Retryable(BackendError::Disconnected(format!(
                    "upstream {}: {error}",
                    replica.name
                )));
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        span.record("http.response.status_code", status.as_u16());
        if status == ::http::StatusCode::TOO_MANY_REQUESTS {
            let after = response
                .headers()
                .get(::http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map_or(Duration::from_secs(1), |s| Duration::from_secs_f64(s.min(3600.0)));
            replica.back_off(after);
            replica.finished(Err(Failure::Other), &self.config);
            tracing::info!(replica = %replica.name, ?after, "upstream is rate limiting");
            return Attempt::Retryable(BackendError::UpstreamBusy { retry_after: after });
        }
        if status.is_server_error() {
            span.record("error.type", status.as_str());
            replica.finished(Err(Failure::Server), &self.config);
            return Attempt::Retryable(BackendError::Failed(format!(
                "upstream {} answered {status}",
                replica.name
            )));
        }
        if !status.is_success() {
            span.record("error.type", status.as_str());
            let text = http::read_all(response).await.map(|b| String::from_utf8_lossy(&b).into_owned());
            let text = text.unwrap_or_default();
            replica.finished(Err(Failure::Other), &self.config);
            if status == ::http::StatusCode::UNAUTHORIZED || status == ::http::StatusCode::FORBIDDEN {
                // About the gateway's own key: the operator's problem, not the client's.
                tracing::warn!(replica = %replica.name, %status, "upstream refused the gateway's credentials");
                return Attempt::Final(BackendError::UpstreamAuth(format!(
                    "{} answered {status}",
                    replica.name
                )));
            }
            return Attempt::Final(refusal(status, &text));
        }
        replica.finished(Ok(start.elapsed()), &self.config);
        // From the first byte on there is no retry: what fails now fails the item.
        let outcome = match &item.request {
            Request::Chat(chat) if chat.stream => relay_stream(item, response).await,
            Request::Chat(_) => chat_json(response).await,
            Request::Tensor(_) => tensor_json(response).await,
            Request::Transcription(t) => transcription_json(response, t.offset).await,
            _ => embeddings_json(response).await,
        };
        match outcome {
            Ok(Some(output)) => item.done(output),
            Ok(None) => {}
            Err(error) => {
                span.record("error.type", "response");
                item.fail(error);
            }
        }
        Attempt::Answered
    }
}

/// An upstream's 4xx about the client's request, for the client: its
/// status, and from OpenAI's `{"error": {"message", "param", "code"}}` or
/// KServe's `{"error": "..."}` the message (redacted) and the fields.
fn refusal(status: ::http::StatusCode, text: &str) -> BackendError {
    let body = serde_json::from_str::<Value>(text).ok();
    let error = body.as_ref().map(|v| &v["error"]);
    let field = |name: &str| {
        let value = error.and_then(|e| e[name].as_str())?;
        let clean = super::redact::message(value);
        (!clean.is_empty() && clean.len() <= 64).then_some(clean)
    };
    let message = error
        .and_then(|e| e["message"].as_str().or(e.as_str()))
        .map(super::redact::message)
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| format!("the model's server refused the request ({status})"));
    BackendError::Refused { status: status.as_u16(), message, param: field("param"), code: field("code") }
}

/// A request body, cheap to send again to another replica.
#[derive(Clone)]
enum Payload {
    Json(bytes::Bytes),
    /// OpenAI's audio form: the WAV file and the text fields.
    Audio {
        wav: Arc<Vec<u8>>,
        fields: Vec<(&'static str, String)>,
    },
}

impl Payload {
    fn json(value: &Value) -> Result<Self, BackendError> {
        Ok(Payload::Json(serde_json::to_vec(value).map_err(|e| BackendError::Failed(e.to_string()))?.into()))
    }
}

enum Attempt {
    /// The item has its terminal event.
    Answered,
    /// Failed before any response byte: another replica may try.
    Retryable(BackendError),
    /// Failed for good.
    Final(BackendError),
}

#[async_trait]
impl Backend for RemoteBackend {
    fn info(&self) -> ModelInfo {
        let platform = match self.protocol {
            Protocol::OpenAi => "openai",
            Protocol::KServe => "kserve",
        };
        let capabilities =
            Capabilities { forwards_body: self.protocol == Protocol::OpenAi, ..Capabilities::default() };
        ModelInfo { owned_by: "upstream", platform, capabilities }
    }

    fn supports(&self, task: Task) -> bool {
        match self.protocol {
            Protocol::OpenAi => matches!(task, Task::Chat | Task::Embeddings | Task::Transcription),
            Protocol::KServe => task == Task::Tensor,
        }
    }

    fn upstream_stats(&self) -> Option<UpstreamStats> {
        Some(UpstreamStats {
            replicas: self
                .replicas
                .all()
                .iter()
                .map(|r| (r.name.clone(), !r.is_ejected(), r.outstanding()))
                .collect(),
            retries: self.retries.load(std::sync::atomic::Ordering::Relaxed),
            ejections: self.replicas.ejections.totals(),
        })
    }

    fn capacity(&self) -> Option<usize> {
        let healthy = self.replicas.healthy();
        // With every replica out, one job at a time may probe them.
        Some((healthy * self.config.replica_concurrency).max(1))
    }

    fn available(&self) -> bool {
        self.replicas.healthy() > 0
    }

    fn runs_in_caller(&self) -> bool {
        true
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = Instant::now();
        let items = batch.len();
        let run = |item| async move {
            if let Err(error) = self.run(item).await {
                item.fail(error);
            }
        };
        match batch.as_slice() {
            // The usual batch of one: no vector of ~3 KB futures to allocate and move.
            [item] => run(item).await,
            _ => {
                join_all(batch.iter().map(run)).await;
            }
        }
        BatchReport { items, elapsed: start.elapsed() }
    }
}

/// Read every replica's load gauges each `interval` (`load.rs`). A replica
/// that does not answer in time, or answers without a known gauge, has no
/// reading until it does.
async fn read_load(replicas: Arc<Replicas>, client: Client, config: LoadMetricsConfig, model: String) {
    /// Most of a metrics page read; a page past it is not read on.
    const MAX_PAGE: usize = 4 << 20;
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let reads = replicas.all().into_iter().map(|r| {
            let (client, config, model) = (&client, &config, model.as_str());
            async move {
                let read = async {
                    let uri = r.target.as_ref().ok()?.join(&config.path).ok()?;
                    let request = ::http::Request::get(uri).body(http::Body::default()).ok()?;
                    let response = client.send(request).await.ok()?;
                    if !response.status().is_success() {
                        return None;
                    }
                    let mut body = response.into_body();
                    let mut page = Vec::new();
                    while let Some(chunk) = http::next_chunk(&mut body).await {
                        page.extend_from_slice(&chunk.ok()?);
                        if page.len() > MAX_PAGE {
                            return None;
                        }
                    }
                    Reported::parse(&String::from_utf8_lossy(&page), model, Instant::now())
                };
                r.report(tokio::time::timeout(config.interval, read).await.ok().flatten());
            }
        });
        join_all(reads).await;
    }
}

/// A hash of a chat prompt's first `tokens` tokens (about 4 bytes each, the
/// gateway's estimate), roles included; `None` for a shorter prompt or
/// another kind of request.
fn prefix(request: &Request, tokens: usize) -> Option<u64> {
    use std::hash::Hasher;
    let Request::Chat(chat) = request else { return None };
    let mut left = tokens.saturating_mul(4);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for message in &chat.messages {
        for part in [message.role.as_bytes(), b"\n", message.content.as_bytes(), b"\n"] {
            let take = part.len().min(left);
            hasher.write(&part[..take]);
            left -= take;
            if left == 0 {
                return Some(hasher.finish());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ChatRequest;

    fn chat(messages: &[(&str, &str)]) -> Request {
        Request::Chat(ChatRequest::of(messages))
    }

    #[test]
    fn prompts_sharing_their_first_tokens_share_a_prefix_and_short_ones_have_none() {
        let system = "Translate the user's text from English to German. ".repeat(4);
        let a = prefix(&chat(&[("system", &system), ("user", "Good morning")]), 32);
        let b = prefix(&chat(&[("system", &system), ("user", "Where is the station?")]), 32);
        assert!(a.is_some());
        assert_eq!(a, b);
        let other = "Translate the user's text from English to French. ".repeat(4);
        assert_ne!(a, prefix(&chat(&[("system", &other), ("user", "Good morning")]), 32));
        // The role is part of the prompt.
        assert_ne!(a, prefix(&chat(&[("user", &system), ("user", "Good morning")]), 32));
        // Shorter than 32 tokens (128 bytes): no affinity.
        assert_eq!(prefix(&chat(&[("user", "Good morning")]), 32), None);
        assert_eq!(
            prefix(&Request::Embeddings(crate::EmbeddingsRequest { inputs: vec![], dimensions: None }), 1),
            None
        );
    }
}
