//! infergate's backends: the [`Backend`] trait that runs a batch of jobs of
//! one model, the typed requests and outputs of every task, and the
//! backends themselves, one module each, chosen by [`BackendConfig`]:
//! [`synthetic`] (outputs without a model, for tests and benchmarks),
//! [`onnx`] (in-process models on ONNX Runtime), [`llama`] (chat on
//! llama.cpp), [`whisper`] (speech on whisper.cpp) and [`remote`] (OpenAI-compatible and KServe v2 GPU
//! servers). Beside them, what the gateway reads requests with: [`audio`],
//! [`tensor`], [`tokens`] and [`json_object`].

pub mod audio;
mod backend;
mod chat_template;
mod config;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod json_object;
pub mod llama;
pub mod onnx;
mod pool;
pub mod remote;
mod reply;
pub mod synthetic;
mod task;
pub mod tensor;
pub mod tokens;
pub mod whisper;

pub use backend::{
    Backend, BatchReport, Capabilities, Chunk, Event, EventSender, Forwarded, Generate, Item, ModelInfo,
    StepReport, UpstreamStats, REQUEST_ID, REQUEST_TIMEOUT,
};
pub use config::BackendConfig;
pub use error::{BackendError, LoadError};
pub use task::{
    AudioTask, ChatMessage, ChatOutput, ChatRequest, EmbeddingInput, EmbeddingsOutput, EmbeddingsRequest,
    FinishReason, ModerationInput, ModerationOutput, ModerationRequest, ModerationResult, OcrLine, OcrOutput,
    OcrRequest, Output, Request, Segment, Task, TensorOutput, TensorRequest, TranscriptionOutput,
    TranscriptionRequest, UpstreamAnswer, VoiceActivityOutput, VoiceActivityRequest,
};
