//! `POST /v1/chat/completions`: JSON and SSE streaming.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue};
use infergate_backends::{json_object, tokens, Capabilities, ChatMessage, ChatRequest, Task};
use serde::Deserialize;
use serde_json::Value;

use super::chat_stream::{self, Usage};
use crate::api::extract::{dispatch_headers, encode, JsonWithRaw};
use crate::call::{Call, Chat, Operation};
use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

/// The request body, as OpenAI documents it. Fields infergate does not use
/// (`user`, `metadata`, `store`, ...) are accepted and ignored, as clients
/// send them freely; fields it cannot honour are refused with a 400.
#[derive(Debug, Deserialize)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    /// Not in OpenAI's API; vLLM's and TGI's extension, which OpenAI SDK
    /// users send through `extra_body`. 0 or -1: no limit.
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub n: Option<i64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default)]
    pub stop: Option<Stop>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub response_format: Option<ResponseFormat>,
}

/// `response_format`: what the answer must be.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        #[allow(dead_code)]
        json_schema: Value,
    },
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or up to four.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One message; `content` is a string or a list of typed parts.
#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: Role,
    #[serde(default)]
    pub content: Option<Content>,
}

#[derive(Debug)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A string or a list of parts, told apart by the first token (what
/// `#[serde(untagged)]` would do by buffering the whole value first).
impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> serde::de::Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<Content, E> {
                Ok(Content::Text(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Content, A::Error> {
                Deserialize::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(Content::Parts)
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

#[derive(Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

/// The validated job, and what the response needs besides it.
struct Plan {
    chat: Chat,
    include_usage: bool,
}

/// `capabilities.forwards_body`: the model is an OpenAI-compatible
/// upstream, which gets the client's body as sent and decides on what
/// infergate's own models refuse (tools, logprobs, several choices, image
/// and audio parts, response formats).
fn plan(body: ChatCompletionRequest, limits: &Limits, capabilities: Capabilities) -> Result<Plan, ApiError> {
    let remote = capabilities.forwards_body;
    if body.messages.is_empty() {
        return Err(ApiError::invalid("messages", "'messages' must contain at least one message"));
    }
    if body.messages.len() > limits.max_messages {
        return Err(ApiError::invalid(
            "messages",
            format!("'messages' has more than {} entries", limits.max_messages),
        ));
    }
    let messages = body
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| flatten(i, m, remote))
        .collect::<Result<Vec<ChatMessage>, ApiError>>()?;
    let limit = limits.max_completion_tokens;
    let max_tokens = match (body.max_completion_tokens, body.max_tokens) {
        (Some(n), _) => bounded("max_completion_tokens", n, limit)?,
        (None, Some(n)) => bounded("max_tokens", n, limit)?,
        (None, None) => limit,
    };
    let temperature = in_range("temperature", body.temperature, 0.0, 2.0)?.unwrap_or(1.0);
    let top_p = in_range("top_p", body.top_p, 0.0, 1.0)?.unwrap_or(1.0);
    let top_k = match body.top_k {
        None | Some(-1 | 0) => None,
        Some(k) if k > 0 => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        Some(k) => {
            return Err(ApiError::invalid("top_k", format!("'top_k' must be -1, 0 or positive, got {k}")))
        }
    };
    in_range("presence_penalty", body.presence_penalty, -2.0, 2.0)?;
    in_range("frequency_penalty", body.frequency_penalty, -2.0, 2.0)?;
    match body.n {
        None | Some(1) => {}
        Some(n) if n < 1 => return Err(ApiError::invalid("n", format!("'n' must be at least 1, got {n}"))),
        Some(_) if remote => {}
        Some(_) => return Err(ApiError::invalid("n", "Only n=1 is supported")),
    }
    if !remote && body.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::invalid("tools", "Tool calling is not supported by this model"));
    }
    if !remote && body.logprobs == Some(true) {
        return Err(ApiError::invalid("logprobs", "logprobs are not supported by this model"));
    }
    let json = match body.response_format {
        None | Some(ResponseFormat::Text) => false,
        Some(_) if remote => false,
        Some(ResponseFormat::JsonObject) if capabilities.json_output => true,
        Some(ResponseFormat::JsonObject) => {
            return Err(ApiError::invalid(
                "response_format",
                "'response_format' of type 'json_object' is not supported by this model",
            ))
        }
        Some(ResponseFormat::JsonSchema { .. }) => {
            return Err(ApiError::invalid(
                "response_format",
                "'response_format' of type 'json_schema' is not supported by this model",
            ))
        }
    };
    let stop = match body.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "'stop' takes up to 4 non-empty sequences"));
    }
    let stream = body.stream.unwrap_or(false);
    if body.stream_options.is_some() && !stream {
        return Err(ApiError::invalid(
            "stream_options",
            "'stream_options' is only allowed when 'stream' is true",
        ));
    }
    let prompt_tokens: u32 = messages.iter().map(|m| tokens::estimate(&m.content)).sum();
    if prompt_tokens > limits.max_input_tokens {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "The messages are about {prompt_tokens} tokens, over the limit of {}",
                limits.max_input_tokens
            ),
        ));
    }
    let bytes = messages.iter().map(|m| m.content.len()).sum();
    let request = ChatRequest {
        messages,
        max_tokens,
        temperature: temperature as f32,
        top_p: top_p as f32,
        top_k,
        seed: body.seed.map(|s| s as u64),
        stop,
        stream,
        json,
        passthrough: None,
    };
    Ok(Plan {
        chat: Chat { request, prompt_tokens, bytes, expected_output: None },
        include_usage: body.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A message's text. Image and audio parts are refused by infergate's text
/// models; a remote model gets them as sent (and they count no tokens here).
fn flatten(index: usize, message: Message, remote: bool) -> Result<ChatMessage, ApiError> {
    let param = || format!("messages[{index}].content");
    let content = match message.content {
        None if message.role == Role::Assistant => String::new(),
        None => return Err(ApiError::invalid(param(), "'content' is required for this role")),
        Some(Content::Text(t)) => t,
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for part in &parts {
                match (part.kind.as_str(), &part.text) {
                    ("text", Some(t)) => text.push_str(t),
                    ("text", None) => return Err(ApiError::invalid(param(), "a text part needs 'text'")),
                    _ if remote => {}
                    (kind, _) => {
                        return Err(ApiError::invalid(
                            param(),
                            format!("content parts of type '{kind}' are not supported by this model"),
                        ))
                    }
                }
            }
            text
        }
    };
    Ok(ChatMessage { role: message.role.as_str().to_owned(), content })
}

fn bounded(param: &str, n: i64, limit: u32) -> Result<u32, ApiError> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=limit).contains(n))
        .ok_or_else(|| ApiError::invalid(param, format!("'{param}' must be between 1 and {limit}, got {n}")))
}

fn in_range(param: &str, value: Option<f64>, lo: f64, hi: f64) -> Result<Option<f64>, ApiError> {
    match value {
        Some(v) if !(lo..=hi).contains(&v) => {
            Err(ApiError::invalid(param, format!("'{param}' must be between {lo} and {hi}, got {v}")))
        }
        other => Ok(other),
    }
}

/// Handle a chat completion.
pub async fn completions(
    State(state): State<SharedState>,
    ctx: RequestContext,
    JsonWithRaw(body, raw): JsonWithRaw<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let call = Call::open(&state, ctx, Some(&body.model), Task::Chat, Operation::Chat).await?;
    let capabilities = call.model().info.capabilities;
    let model_name = body.model.clone();
    let mut plan = plan(body, &state.config.limits, capabilities)?;
    // A remote model gets the client's fields infergate does not interpret.
    if capabilities.forwards_body {
        plan.chat.request.passthrough = Some(raw);
    }
    let id = call.ctx().object_id("chatcmpl");
    let meta =
        |created| chat_stream::Meta { id, created, model: model_name, include_usage: plan.include_usage };
    if plan.chat.request.stream {
        let stream = call.chat_stream(plan.chat).await?;
        let headers = dispatch_headers(&stream.dispatch);
        return Ok((
            headers,
            chat_stream::respond(meta(state.now()), stream, state.readiness.grace_over.clone()),
        )
            .into_response());
    }
    let answer = call.once(plan.chat).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let meta = meta(state.now());
    let served = answer.served;
    let chat = answer.output;
    if let Some(answer) = chat.upstream {
        // The upstream's answer as it wrote it, under the name the client used;
        // one from the cache (or another request's job) gets this answer's
        // own id and time.
        let name = Value::String(meta.model);
        let answer = match answer.model_at {
            Some(at) if !served => json_object::splice(&answer.body, at, &name),
            _ if served => json_object::rewrite(
                &answer.body,
                &[
                    ("id", Some(Value::String(meta.id))),
                    ("created", Some(meta.created.into())),
                    ("model", Some(name)),
                ],
            ),
            _ => json_object::rewrite(&answer.body, &[("model", Some(name))]),
        }
        .map_err(|e| ApiError::Internal { detail: format!("upstream answer: {e}") })?;
        let json = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
        return Ok(encode(|| (headers, json, answer).into_response()));
    }
    let body = serde_json::json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "system_fingerprint": null,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": chat.text, "refusal": null },
            "logprobs": null,
            "finish_reason": chat.finish_reason.as_str(),
        }],
        "usage": Usage::from(&chat),
    });
    Ok(encode(|| (headers, Json(body)).into_response()))
}

/// The fuzz target's way in (`fuzz/`): a body decoded and checked as the
/// handler does, for an in-process model or (`remote`) an upstream.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz(body: &[u8], limits: &Limits, remote: bool) -> Result<(), ApiError> {
    let capabilities = Capabilities { forwards_body: remote, ..Capabilities::default() };
    plan(crate::api::extract::decode_json(body, limits.max_json_depth)?, limits, capabilities).map(drop)
}
