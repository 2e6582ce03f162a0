//! Server-sent events for streamed chat completions: one
//! `chat.completion.chunk` per token, a final chunk with the finish reason,
//! an optional usage chunk, then `data: [DONE]`. A remote model's chunks are
//! relayed as the upstream wrote them (tool calls, logprobs, reasoning and
//! all), under the model name the client used.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use futures_util::stream::{self, Stream};
use infergate_backends::{json_object, ChatOutput, Chunk};
use serde::Serialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::call::{ChatStream, StreamEvent};
use crate::error::ApiError;

/// Token counts as OpenAI reports them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
}

impl From<&ChatOutput> for Usage {
    fn from(c: &ChatOutput) -> Self {
        Usage {
            prompt_tokens: c.prompt_tokens,
            completion_tokens: c.completion_tokens,
            total_tokens: c.prompt_tokens.saturating_add(c.completion_tokens),
        }
    }
}

/// What every chunk repeats.
pub struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
    pub include_usage: bool,
}

impl Meta {
    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason }],
        });
        if self.include_usage {
            chunk["usage"] = Value::Null;
        }
        chunk
    }

    fn usage_chunk(&self, usage: Usage) -> Value {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": null,
            "choices": [],
            "usage": usage,
        })
    }
}

struct StreamState {
    meta: Meta,
    stream: ChatStream,
    pending: VecDeque<String>,
    finished: bool,
    /// The backend relays an upstream's chunks; infergate writes none of its own.
    relay: bool,
    grace_over: CancellationToken,
}

impl StreamState {
    /// Turn one event into the SSE data lines it produces.
    fn absorb(&mut self, event: Option<StreamEvent>) {
        match event {
            Some(StreamEvent::Delta(text)) => self.push(self.meta.chunk(json!({ "content": text }), None)),
            Some(StreamEvent::Chunk(chunk)) => self.relay(chunk),
            Some(StreamEvent::Done(chat)) => {
                if !self.relay {
                    self.push(self.meta.chunk(json!({}), Some(chat.finish_reason.as_str())));
                    if self.meta.include_usage {
                        self.push(self.meta.usage_chunk(Usage::from(&chat)));
                    }
                }
                self.pending.push_back("[DONE]".to_owned());
                self.finished = true;
            }
            Some(StreamEvent::Failed(error)) => self.fail(error),
            None => self.finished = true,
        }
    }

    /// An error after the headers went out travels as an SSE event in the
    /// OpenAI error shape, which the SDKs raise; then the stream ends.
    fn fail(&mut self, error: ApiError) {
        let parts = error.parts();
        tracing::warn!(error = %error, "stream failed after it started");
        self.push(json!({ "error": { "message": error.to_string(), "type": parts.kind, "param": null, "code": parts.code } }));
        self.finished = true;
    }

    /// An upstream's chunk, renamed to the client's model, otherwise as it
    /// came (not parsed again). infergate always asks the upstream for
    /// usage; a client that did not gets none of it.
    fn relay(&mut self, chunk: Chunk) {
        self.relay = true;
        let strip = !self.meta.include_usage && chunk.has_usage;
        if strip && chunk.no_choices {
            return;
        }
        let mut changes = Vec::new();
        if chunk.has_model {
            changes.push(("model", Some(Value::String(self.meta.model.clone()))));
        }
        if strip {
            changes.push(("usage", None));
        }
        if changes.is_empty() {
            self.pending.push_back(chunk.json);
            return;
        }
        // The backend sends objects it parsed; one that is not would be a bug there.
        match json_object::rewrite(chunk.json.as_bytes(), &changes).map(String::from_utf8) {
            Ok(Ok(text)) => self.pending.push_back(text),
            _ => self.fail(ApiError::Internal { detail: "an upstream chunk could not be relayed".into() }),
        }
    }

    fn push(&mut self, value: Value) {
        self.pending.push_back(value.to_string());
    }
}

/// The SSE response; dropping it cancels the job.
///
/// When `grace_over` fires (the shutdown grace ended with the stream still
/// open) the stream ends with an error event saying so.
pub fn respond(meta: Meta, stream: ChatStream, grace_over: CancellationToken) -> impl IntoResponse {
    let relay = stream.relays();
    let mut state =
        StreamState { meta, stream, pending: VecDeque::new(), finished: false, relay: false, grace_over };
    if !relay {
        state.push(state.meta.chunk(json!({ "role": "assistant", "content": "" }), None));
    }
    Sse::new(events(state)).keep_alive(KeepAlive::default())
}

fn events(state: StreamState) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(data) = state.pending.pop_front() {
                return Some((Ok(SseEvent::default().data(data)), state));
            }
            if state.finished {
                return None;
            }
            let grace_over = state.grace_over.clone();
            tokio::select! {
                event = state.stream.next() => state.absorb(event),
                () = grace_over.cancelled() => state.fail(ApiError::ShuttingDown),
            }
        }
    })
}
