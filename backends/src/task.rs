//! Tasks, and the typed request and output of each.
//!
//! These are the gateway's internal forms, decoded from whichever API the
//! client spoke; the gateway encodes outputs back into that API's shape.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;

use crate::tensor::Tensor;

/// What a model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Chat completions (and translation through a prompt).
    Chat,
    /// Text embeddings.
    Embeddings,
    /// Speech to text, and speech translation to English.
    Transcription,
    /// Content moderation of text and images.
    Moderation,
    /// A tensor-in, tensor-out model served over KServe v2.
    Tensor,
    /// Text in images: lines with their boxes.
    Ocr,
}

impl Task {
    /// The name used in config and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Chat => "chat",
            Task::Embeddings => "embeddings",
            Task::Transcription => "transcription",
            Task::Moderation => "moderation",
            Task::Tensor => "tensor",
            Task::Ocr => "ocr",
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decoded request for one model.
#[derive(Debug, Clone)]
pub enum Request {
    Chat(ChatRequest),
    Embeddings(EmbeddingsRequest),
    Transcription(TranscriptionRequest),
    Moderation(ModerationRequest),
    Tensor(TensorRequest),
    Ocr(OcrRequest),
    /// Where the speech is in audio (for cutting long audio into chunks).
    VoiceActivity(VoiceActivityRequest),
}

/// One chat message with its text content flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

/// A chat completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
    pub top_p: f32,
    /// Sample among the `k` likeliest tokens only (`None`: all).
    pub top_k: Option<u32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    /// The client reads tokens as they come.
    pub stream: bool,
    /// The answer must be one JSON object (`response_format` `json_object`):
    /// constrained decoding where the model supports it
    /// ([`crate::Capabilities::json_output`]).
    pub json: bool,
    /// The client's request body as sent (a JSON object), for remote
    /// backends to forward with the fields infergate does not interpret
    /// (tools, logprobs, ...).
    pub passthrough: Option<bytes::Bytes>,
}

#[cfg(test)]
impl ChatRequest {
    /// A greedy, unstreamed request of `(role, content)` messages, for tests.
    pub(crate) fn of(messages: &[(&str, &str)]) -> ChatRequest {
        ChatRequest {
            messages: messages
                .iter()
                .map(|(role, content)| ChatMessage { role: (*role).into(), content: (*content).into() })
                .collect(),
            max_tokens: 16,
            temperature: 0.0,
            top_p: 1.0,
            top_k: None,
            seed: None,
            stop: Vec::new(),
            stream: false,
            json: false,
            passthrough: None,
        }
    }
}

/// Why generation ended, as OpenAI names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FinishReason {
    Stop,
    Length,
    /// The model called tools (remote models).
    ToolCalls,
    /// The upstream's content filter cut the answer.
    ContentFilter,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

/// A finished chat completion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChatOutput {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// A remote model's answer body as the upstream sent it, so that the
    /// fields infergate does not interpret (tool calls, logprobs, reasoning,
    /// more choices) reach the client. Streams relay chunks instead
    /// ([`crate::Event::Chunk`]).
    pub upstream: Option<UpstreamAnswer>,
}

/// An upstream's whole answer, a JSON object, as it wrote it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamAnswer {
    #[serde(with = "bytes_as_text")]
    pub body: bytes::Bytes,
    /// Where its top-level `model` value is written, so that the gateway can
    /// put the client's model name there without parsing the answer again;
    /// `None` when there is no such member or there are several.
    pub model_at: Option<std::ops::Range<usize>>,
}

/// One embeddings input: text, or token ids from the client's tokenizer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EmbeddingInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// An embeddings request of one or more inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub inputs: Vec<EmbeddingInput>,
    /// Requested output size, when the model can shorten its vectors.
    pub dimensions: Option<u32>,
}

/// Vectors in input order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EmbeddingsOutput {
    pub vectors: Vec<Vec<f32>>,
    pub prompt_tokens: u32,
}

/// Transcribe in the spoken language, or translate to English.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioTask {
    Transcribe,
    Translate,
}

/// Audio to transcribe or translate: 16 kHz mono samples, the whole file
/// or one chunk of it (the gateway splits long audio at silences).
#[derive(Debug, Clone)]
pub struct TranscriptionRequest {
    pub pcm: std::sync::Arc<[f32]>,
    /// Where this chunk starts in the file, in seconds; segment times include it.
    pub offset: f64,
    pub task: AudioTask,
    /// ISO-639-1 code; `None` asks the model to detect it.
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: f32,
    /// Whether the answer shows segment times (verbose_json, srt, vtt):
    /// without them a model may skip its timestamp tokens, and the chunk is
    /// one segment.
    pub timestamps: bool,
}

/// Audio to find speech in: 16 kHz mono samples. Served by voice-activity
/// models, which are tensor models (their KServe form takes the samples as
/// an FP32 tensor); this form shares the samples instead of copying them.
#[derive(Debug, Clone)]
pub struct VoiceActivityRequest {
    pub pcm: std::sync::Arc<[f32]>,
}

/// Speech segments `(start, end)` in seconds, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VoiceActivityOutput {
    pub segments: Vec<(f64, f64)>,
}

/// One timed piece of a transcript.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    pub id: u32,
    /// Seconds from the start of the audio.
    pub start: f64,
    pub end: f64,
    pub text: String,
    /// The mean log-probability of the segment's tokens, and the probability
    /// that it holds no speech, as OpenAI's `verbose_json` gives them; `None`
    /// where the backend cannot tell.
    #[serde(default)]
    pub avg_logprob: Option<f64>,
    #[serde(default)]
    pub no_speech_prob: Option<f64>,
}

/// A transcript with its timing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TranscriptionOutput {
    pub text: String,
    pub language: String,
    /// Audio length in seconds.
    pub duration: f64,
    pub segments: Vec<Segment>,
    /// How sure the model is, 0-1: the least, over its segments, of the
    /// mean token probability (the exponent of the mean log-probability)
    /// and one minus the no-speech probability; `None` where the backend
    /// cannot tell.
    #[serde(default)]
    pub confidence: Option<f64>,
}

/// One moderation input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModerationInput {
    Text(String),
    /// An `http(s)` URL or `data:` URL of an image.
    ImageUrl(String),
}

impl ModerationInput {
    /// The input type as `category_applied_input_types` names it.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ModerationInput::Text(_) => "text",
            ModerationInput::ImageUrl(_) => "image",
        }
    }
}

/// A moderation request. Each group gets one result: a list of strings is
/// one group per string, a multi-modal list (text and images) is one group.
#[derive(Debug, Clone, PartialEq)]
pub struct ModerationRequest {
    pub groups: Vec<Vec<ModerationInput>>,
}

/// Scores and flags for one moderated input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModerationResult {
    pub flagged: bool,
    pub categories: BTreeMap<String, bool>,
    pub category_scores: BTreeMap<String, f64>,
    pub category_applied_input_types: BTreeMap<String, Vec<String>>,
}

/// One result per group, in order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModerationOutput {
    pub results: Vec<ModerationResult>,
}

/// KServe v2 inference inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRequest {
    pub inputs: Vec<Tensor>,
    /// Output names the client asked for; empty means all.
    pub outputs: Vec<String>,
}

/// KServe v2 inference outputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TensorOutput {
    pub outputs: Vec<Tensor>,
}

/// An image to read: PNG, JPEG or WebP bytes, decoded by the backend.
#[derive(Debug, Clone)]
pub struct OcrRequest {
    pub image: Bytes,
}

/// One line of recognised text.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OcrLine {
    pub text: String,
    /// Mean probability of the line's characters.
    pub confidence: f32,
    /// Corners in image pixels: top-left, top-right, bottom-right, bottom-left.
    pub corners: [[f32; 2]; 4],
}

/// The lines of an image in reading order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OcrOutput {
    pub width: u32,
    pub height: u32,
    pub lines: Vec<OcrLine>,
}

/// A finished job's result.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Output {
    Chat(ChatOutput),
    Embeddings(EmbeddingsOutput),
    Transcription(TranscriptionOutput),
    Moderation(ModerationOutput),
    Tensor(TensorOutput),
    Ocr(OcrOutput),
    VoiceActivity(VoiceActivityOutput),
}

/// An upstream's answer body (JSON, so UTF-8) written as a string.
mod bytes_as_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(body: &bytes::Bytes, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(std::str::from_utf8(body).map_err(serde::ser::Error::custom)?)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<bytes::Bytes, D::Error> {
        String::deserialize(input).map(bytes::Bytes::from)
    }
}
