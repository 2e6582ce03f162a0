//! Chat jobs: priced by the prompt and the output the model is expected to
//! generate, answered whole or as a stream of events whose bookkeeping
//! (first token, usage, the model's output estimate) happens here, so the
//! API only encodes them.

use std::sync::Arc;

use infergate_backends::{ChatOutput, ChatRequest, Chunk, Event, Output, Request, Task};

use super::outcome::Outcome;
use super::payload::{Payload, Usage};
use super::request::{Call, Events};
use crate::config::Limits;
use crate::error::ApiError;
use crate::feedback::clip;
use crate::runner::{Cost, DispatchInfo, ModelHandle};
use crate::tenancy::Meter;

/// A chat job: the request, with the prompt's estimated tokens and bytes.
#[derive(Debug)]
pub struct Chat {
    pub request: ChatRequest,
    pub prompt_tokens: u32,
    pub bytes: usize,
    /// Tokens the answer is expected to take; `None`: the model's recent
    /// average, capped by `max_tokens`.
    pub expected_output: Option<u32>,
}

impl Payload for Chat {
    type Output = ChatOutput;
    const TASK: Task = Task::Chat;
    const METER: Option<Meter> = Some(Meter::Tokens);

    /// The prompt plus the output expected. A stream's deadline is on its
    /// first token: the prompt.
    fn prepare(self, model: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        let prompt = f64::from(self.prompt_tokens);
        let expected = self.expected_output.unwrap_or_else(|| model.expected_output(self.request.max_tokens));
        let total = prompt + f64::from(expected);
        let first = if self.request.stream { prompt } else { total };
        Ok((Request::Chat(self.request), Cost { total, first, bytes: self.bytes }))
    }

    fn output(output: Output) -> Option<ChatOutput> {
        match output {
            Output::Chat(out) => Some(out),
            _ => None,
        }
    }

    fn observe(output: &ChatOutput, model: &ModelHandle) {
        model.observe_output(output.completion_tokens);
    }

    fn content(&self) -> Option<serde_json::Value> {
        let messages: Vec<serde_json::Value> = self
            .request
            .messages
            .iter()
            .map(|m| serde_json::json!({ "role": m.role, "content": clip(&m.content) }))
            .collect();
        Some(serde_json::json!(messages))
    }

    fn output_content(output: &ChatOutput) -> Option<serde_json::Value> {
        Some(serde_json::json!(clip(&output.text)))
    }

    fn usage(output: &ChatOutput) -> Option<Usage> {
        Some(Usage { input: output.prompt_tokens, output: Some(output.completion_tokens) })
    }

    /// The usage and the finish reason.
    fn record(output: &ChatOutput, span: &tracing::Span) {
        span.record("gen_ai.usage.input_tokens", output.prompt_tokens)
            .record("gen_ai.usage.output_tokens", output.completion_tokens)
            .record("gen_ai.response.finish_reasons", output.finish_reason.as_str());
    }
}

/// What a streamed chat answer produces, in order.
#[derive(Debug)]
pub enum StreamEvent {
    /// Generated text (infergate's own models).
    Delta(String),
    /// An upstream's chunk as it came (remote models).
    Chunk(Chunk),
    /// The end, with the usage; no event follows.
    Done(ChatOutput),
    /// A failure after the stream started; no event follows.
    Failed(ApiError),
}

impl Call {
    /// A streamed chat answer, once its first event came by the deadline
    /// (an error before it is the request's error).
    pub async fn chat_stream(self, chat: Chat) -> Result<ChatStream, ApiError> {
        let mut outcome = self.outcome();
        let input = self.keeps_content().then(|| chat.content()).flatten();
        let relayed = self.model().info.capabilities.forwards_body;
        let mut running = self.submit(chat, relayed).await?;
        let first = running.next_by(self.deadline()).await?;
        if let Event::Failed(error) = first {
            return Err(error.into());
        }
        outcome.first_token();
        let first_at = outcome.elapsed();
        Ok(ChatStream {
            dispatch: running.dispatch(),
            first: Some(first),
            running,
            model: self.model().clone(),
            outcome: Some(outcome),
            first_at,
            input,
        })
    }
}

/// A chat answer being streamed; dropping it cancels the job.
pub struct ChatStream {
    pub dispatch: DispatchInfo,
    first: Option<Event>,
    running: Events,
    model: Arc<ModelHandle>,
    /// Taken when the stream completes; dropped unfinished it counts as missed.
    outcome: Option<Outcome>,
    /// Seconds from arrival to the first token.
    first_at: f64,
    /// The prompt as feedback keeps it (a tenant with `capture_content`).
    input: Option<serde_json::Value>,
}

impl ChatStream {
    /// Whether the first event is an upstream's chunk (a relayed stream).
    pub fn relays(&self) -> bool {
        matches!(self.first, Some(Event::Chunk(_)))
    }

    /// The next event; `None` after `Done` or `Failed`.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        self.outcome.as_ref()?;
        let event = match self.first.take() {
            Some(first) => Ok(first),
            None => self.running.next().await,
        };
        Some(match event {
            Ok(Event::Delta(text)) => StreamEvent::Delta(text),
            Ok(Event::Chunk(chunk)) => StreamEvent::Chunk(chunk),
            Ok(Event::Done(Output::Chat(chat))) => {
                let served = self.running.served();
                if !served {
                    Chat::observe(&chat, &self.model);
                }
                // The body is polled inside the request's server span.
                Chat::record(&chat, &tracing::Span::current());
                let mut outcome = self.outcome.take();
                if let (Some(outcome), Some(input)) = (outcome.as_mut(), self.input.take()) {
                    outcome
                        .keep(serde_json::json!({ "input": input, "output": Chat::output_content(&chat) }));
                }
                match outcome {
                    Some(outcome) if served => outcome.served(),
                    Some(outcome) => {
                        outcome.stream_done(chat.prompt_tokens, chat.completion_tokens, self.first_at)
                    }
                    None => {}
                }
                StreamEvent::Done(chat)
            }
            Ok(Event::Done(_)) => {
                self.outcome = None;
                StreamEvent::Failed(ApiError::Internal {
                    detail: "chat stream got another task's output".into(),
                })
            }
            Ok(Event::Failed(error)) => {
                self.outcome = None;
                StreamEvent::Failed(error.into())
            }
            Err(error) => {
                self.outcome = None;
                StreamEvent::Failed(error)
            }
        })
    }
}
