//! In-process models on ONNX Runtime (`ort`, loaded at run time from the
//! library `scripts/setup.sh` installs; `ORT_DYLIB_PATH` names it).
//!
//! One backend per model: a [`crate::pool::Pool`] of worker threads, each with its
//! own sessions, runs whole batches — one `Session::run` per batch (split
//! only past `max_run_inputs` sequences or images, to bound memory).
//! Pipelines: text embeddings (BERT-style encoders with mean pooling),
//! image moderation (open_nsfw), voice activity (silero VAD), OCR
//! (PP-OCRv4) and chat (decoder with KV cache, stepped for continuous
//! batching through [`Generate`]: each worker thread is a lane with its own
//! running set).

mod chat;
mod embeddings;
pub mod images;
mod nsfw;
mod ocr;
pub mod vad;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use async_trait::async_trait;
use ort::environment::Environment;
use ort::session::Session;
use serde::Deserialize;

use crate::pool::Pool;
use crate::{Backend, BackendError, BatchReport, Capabilities, Generate, Item, ModelInfo, StepReport, Task};

/// What the model does with its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pipeline {
    /// A BERT-style encoder (`input_ids`, `attention_mask`, `token_type_ids`
    /// → `last_hidden_state`): mean pooling and L2 normalisation.
    TextEmbeddings,
    /// open_nsfw: images → the `sexual` moderation category.
    ImageModeration,
    /// silero VAD over KServe: 16 kHz audio → speech probability per 32 ms frame.
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
    pub fn task(self) -> Task {
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
    pub fn validate(&self) -> Result<(), String> {
        if self.sessions == 0 || self.intra_threads == 0 || self.max_run_inputs == 0 || self.kv_tokens == 0 {
            return Err("sessions, intra_threads, max_run_inputs and kv_tokens must be at least 1".into());
        }
        if self.max_tokens < 3 {
            return Err("max_tokens must leave room for the special tokens (at least 3)".into());
        }
        if self.max_image_pixels == 0 {
            return Err("max_image_pixels must be greater than zero".into());
        }
        if !(0.0..=1.0).contains(&self.flag_threshold) {
            return Err("flag_threshold must be in [0, 1]".into());
        }
        if self.pipeline == Pipeline::TextEmbeddings && self.tokenizer.is_none() {
            return Err("tokenizer: text-embeddings needs a tokenizer.json".into());
        }
        Ok(())
    }
}

/// The process's ONNX Runtime environment, loaded on first use.
fn environment() -> Result<&'static Environment, String> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            // ORT_DYLIB_PATH, else the library scripts/setup.sh links into the
            // repository (the working directory of `make run`), else the system's.
            let local = Path::new(".ort/lib/libonnxruntime.so");
            let path = std::env::var("ORT_DYLIB_PATH").unwrap_or_else(|_| {
                if local.is_file() { local.display().to_string() } else { "libonnxruntime.so".into() }
            });
            ort::init_from(&path)
                .map_err(|e| {
                    format!("cannot load ONNX Runtime from {path}: {e} (run scripts/setup.sh, or set ORT_DYLIB_PATH)")
                })?
                .with_name("infergate")
                .build()
                .map_err(|e| format!("ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A session for `path` with the configured threads and provider.
pub(crate) fn session(path: &Path, config: &OnnxConfig) -> Result<Session, String> {
    session_with(path, config.intra_threads, config.execution_provider)
}

/// A session for `path` with `intra_threads` threads on `provider`.
pub(crate) fn session_with(
    path: &Path,
    intra_threads: usize,
    provider: ExecutionProvider,
) -> Result<Session, String> {
    if !path.is_file() {
        return Err(format!("model file {} not found (scripts/setup.sh fetches the models)", path.display()));
    }
    let environment = environment()?;
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut builder = Session::builder(environment)
        .map_err(|e| fail(&e))?
        .with_intra_threads(intra_threads)
        .map_err(|e| fail(&e))?
        .with_inter_threads(1)
        .map_err(|e| fail(&e))?;
    if provider == ExecutionProvider::Cuda {
        builder = builder
            .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
            .map_err(|e| format!("{}: the CUDA execution provider is unavailable: {e}", path.display()))?;
    }
    builder.commit_from_file(path).map_err(|e| fail(&e))
}

/// What each worker thread runs a batch with.
pub(crate) trait Worker: Send + 'static {
    /// Run the items as one batch; every item gets exactly one terminal event.
    fn run(&mut self, items: Vec<Item>);

    /// One step of continuous batching (generative pipelines): `join` enters
    /// the running set, then every running sequence advances a token. Others
    /// run `join` as a whole batch.
    fn step(&mut self, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        let sequences = join.len();
        self.run(join);
        let elapsed = start.elapsed();
        StepReport { running: 0, reserved: 0, tokens: 0, sequences, elapsed, prefill: elapsed }
    }
}

/// A model on ONNX Runtime.
pub struct OnnxBackend {
    pipeline: Pipeline,
    pool: Pool<Box<dyn Worker>>,
    max_sequences: usize,
    kv_budget: usize,
}

impl OnnxBackend {
    /// Load the model into `config.sessions` workers; fails with a message
    /// naming the file when anything is missing or wrong.
    pub fn load(model: &str, config: &OnnxConfig) -> Result<Self, String> {
        config.validate()?;
        let config_for_workers = config.clone();
        let make = move || -> Result<Box<dyn Worker>, String> {
            let c = &config_for_workers;
            Ok(match c.pipeline {
                Pipeline::TextEmbeddings => Box::new(embeddings::EmbeddingsWorker::load(c)?),
                Pipeline::ImageModeration => Box::new(nsfw::NsfwWorker::load(c)?),
                Pipeline::VoiceActivity => Box::new(vad::VadWorker::load(c)?),
                Pipeline::Ocr => Box::new(ocr::OcrWorker::load(c)?),
                Pipeline::Chat => Box::new(chat::ChatWorker::load(c)?),
            })
        };
        let pool = Pool::start(&format!("onnx-{model}"), config.sessions, make)?;
        Ok(OnnxBackend {
            pipeline: config.pipeline,
            pool,
            max_sequences: config.max_run_inputs,
            kv_budget: config.kv_tokens,
        })
    }
}

#[async_trait]
impl Backend for OnnxBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            owned_by: "infergate",
            platform: "onnxruntime",
            capabilities: Capabilities {
                voice_activity: self.pipeline == Pipeline::VoiceActivity,
                ..Capabilities::default()
            },
        }
    }

    fn supports(&self, task: Task) -> bool {
        task == self.pipeline.task()
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = Instant::now();
        let items = batch.len();
        let (live, gone): (Vec<Item>, Vec<Item>) = batch.into_iter().partition(|i| !i.cancel.is_cancelled());
        for item in gone {
            item.fail(BackendError::Cancelled);
        }
        if !live.is_empty() {
            // On failure the job and its items were dropped: each item's
            // handler sees its channel close and answers with an error.
            if let Err(error) = self.pool.run(move |worker| worker.run(live)).await {
                tracing::error!(%error, "ONNX batch failed");
            }
        }
        BatchReport { items, elapsed: start.elapsed() }
    }

    fn generator(&self) -> Option<&dyn Generate> {
        (self.pipeline == Pipeline::Chat).then_some(self as &dyn Generate)
    }
}

#[async_trait]
impl Generate for OnnxBackend {
    fn lanes(&self) -> usize {
        self.pool.workers()
    }

    fn max_sequences(&self) -> usize {
        self.max_sequences
    }

    fn kv_budget(&self) -> usize {
        self.kv_budget
    }

    async fn step(&self, lane: usize, join: Vec<Item>) -> StepReport {
        let start = Instant::now();
        match self.pool.run_on(lane, move |worker| worker.step(join)).await {
            Ok(report) => report,
            // The worker panicked: its running set's items were dropped, and
            // their handlers see their channels close.
            Err(error) => {
                tracing::error!(%error, "ONNX decoding step failed");
                let elapsed = start.elapsed();
                StepReport { running: 0, reserved: 0, tokens: 0, sequences: 0, elapsed, prefill: elapsed }
            }
        }
    }
}

/// A run failed: every item of the batch gets the error.
pub(crate) fn fail_all(items: &[Item], error: &dyn std::fmt::Display) {
    for item in items {
        item.fail(BackendError::Failed(error.to_string()));
    }
}
