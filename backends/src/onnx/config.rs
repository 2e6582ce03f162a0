//! `backend = { kind = "onnx", ... }`: which pipeline, which files, and
//! how many sessions and threads.

use std::path::PathBuf;

use serde::Deserialize;

use crate::{LoadError, Task};

/// What the model does with its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// A BERT-style encoder (`input_ids`, `attention_mask`, `token_type_ids`
    /// → `last_hidden_state`): mean pooling and L2 normalisation.
    TextEmbeddings,
    /// open_nsfw: images → the `sexual` moderation category.
    ImageModeration,
    /// silero VAD: 16 kHz audio → speech probability per 32 ms frame and
    /// speech segments, over KServe and for the speech pipeline's chunking.
    VoiceActivity,
    /// A decoder-only chat model with a KV cache (SmolLM2); `model` is the
    /// directory with `model.onnx`, `tokenizer.json`, `chat_template.jinja`
    /// and `generation.json`.
    Chat,
    /// PP-OCRv4 detection, orientation and recognition; `model` is the
    /// directory with `det.onnx`, `cls.onnx`, `rec.onnx`, `ppocr_keys_v1.txt`.
    Ocr,
}

impl Pipeline {
    /// The task a model with this pipeline serves.
    pub(crate) fn task(self) -> Task {
        match self {
            Pipeline::TextEmbeddings => Task::Embeddings,
            Pipeline::ImageModeration => Task::Moderation,
            Pipeline::VoiceActivity => Task::Tensor,
            Pipeline::Ocr => Task::Ocr,
            Pipeline::Chat => Task::Chat,
        }
    }
}

/// Where sessions run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    /// CUDA; start-up fails when it cannot be used, never silently CPU.
    Cuda,
}

/// `backend = { kind = "onnx", ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OnnxConfig {
    pub pipeline: Pipeline,
    /// The `.onnx` file (for `ocr`, the models' directory), relative to the
    /// working directory.
    pub model: PathBuf,
    /// `tokenizer.json` (Hugging Face format) for text pipelines.
    #[serde(default)]
    pub tokenizer: Option<PathBuf>,
    /// Worker threads, each with its own session: batches run in parallel.
    #[serde(default = "one")]
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    #[serde(default = "one")]
    pub intra_threads: usize,
    #[serde(default)]
    pub execution_provider: ExecutionProvider,
    /// Longest token sequence, special tokens included (text pipelines).
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
    /// Cut longer inputs to `max_tokens` (as sentence-transformers does);
    /// `false` refuses them with a 400 instead.
    #[serde(default = "yes")]
    pub truncate: bool,
    /// Most sequences or images in one `Session::run` (chat: most sequences
    /// one session decodes together).
    #[serde(default = "default_max_run_inputs")]
    pub max_run_inputs: usize,
    /// Text embeddings: most padded tokens (sequences × the longest) in one
    /// `Session::run`, so that one run of long texts stays short (a job
    /// whose client has left stops between runs).
    #[serde(default = "default_max_run_tokens")]
    pub max_run_tokens: usize,
    /// Inputs that pad to the longest in their run (text embeddings' token
    /// sequences, OCR's text lines) run sorted by length, split where a
    /// run's padding would pass this fraction of its real tokens or pixels
    /// (`inf`: one run per `max_run_inputs`, as before).
    #[serde(default = "default_max_run_padding")]
    pub max_run_padding: f64,
    /// Chat: KV-cache tokens one session's running set may hold (each
    /// sequence counts its prompt plus its allowed output).
    #[serde(default = "default_kv_tokens")]
    pub kv_tokens: usize,
    /// Largest image accepted, in pixels, checked before decoding.
    #[serde(default = "default_max_image_pixels")]
    pub max_image_pixels: u64,
    /// Score from which a moderation category is flagged.
    #[serde(default = "default_flag_threshold")]
    pub flag_threshold: f64,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn default_max_tokens() -> usize {
    256
}
fn default_max_run_inputs() -> usize {
    64
}
fn default_max_run_tokens() -> usize {
    4096
}
fn default_max_run_padding() -> f64 {
    0.1
}
fn default_kv_tokens() -> usize {
    16_384
}
fn default_max_image_pixels() -> u64 {
    25_000_000
}
fn default_flag_threshold() -> f64 {
    0.8
}

impl OnnxConfig {
    /// Checks serde cannot make; errors name the field.
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        if self.sessions == 0
            || self.intra_threads == 0
            || self.max_run_inputs == 0
            || self.max_run_tokens == 0
            || self.kv_tokens == 0
        {
            return Err(LoadError::Settings(
                "sessions, intra_threads, max_run_inputs, max_run_tokens and kv_tokens must be at least 1",
            ));
        }
        if self.max_tokens < 3 {
            return Err(LoadError::Settings(
                "max_tokens must leave room for the special tokens (at least 3)",
            ));
        }
        if self.max_run_padding.is_nan() || self.max_run_padding < 0.0 {
            return Err(LoadError::Settings("max_run_padding must be 0 or more (inf: no limit)"));
        }
        if self.max_image_pixels == 0 {
            return Err(LoadError::Settings("max_image_pixels must be greater than zero"));
        }
        if !(0.0..=1.0).contains(&self.flag_threshold) {
            return Err(LoadError::Settings("flag_threshold must be in [0, 1]"));
        }
        if self.pipeline == Pipeline::TextEmbeddings && self.tokenizer.is_none() {
            return Err(LoadError::setting("tokenizer", "text-embeddings needs a tokenizer.json"));
        }
        Ok(())
    }
}
