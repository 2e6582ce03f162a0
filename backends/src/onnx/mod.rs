//! In-process models on ONNX Runtime (`ort`, loaded at run time from the
//! library `scripts/setup.sh` installs; `ORT_DYLIB_PATH` names it).
//!
//! One backend per model (settings in `config.rs`): the crate's pool of
//! worker threads, each with its own sessions (`session.rs`) in its
//! pipeline's `Worker` (`worker.rs`), runs whole batches — one
//! `Session::run` per batch of images, and for inputs that pad (token
//! sequences, text-line crops) runs of similar length (`runs.rs`: split
//! where padding would pass `max_run_padding`, or past `max_run_inputs`
//! inputs, to bound memory). Pipelines: text embeddings (BERT-style
//! encoders with mean pooling), image moderation (open_nsfw), voice activity
//! (silero VAD), OCR (PP-OCRv4) and chat (decoder with KV cache, stepped for
//! continuous batching through [`Generate`]: each worker thread is a lane
//! with its own running set). [`images`] reads image inputs; the gateway
//! uses it for an upload's bytes and size before the job is queued.

mod chat;
mod config;
mod embeddings;
pub mod images;
mod nsfw;
mod ocr;
mod runs;
mod session;
mod vad;
mod worker;

use std::time::Instant;

use async_trait::async_trait;

pub use self::config::{ExecutionProvider, OnnxConfig, Pipeline};
pub use self::ocr::detector_size;
use self::worker::Worker;
use crate::pool::Pool;
use crate::{
    Backend, BackendError, BatchReport, Capabilities, Generate, Item, LoadError, ModelInfo, StepReport, Task,
};

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
    pub fn load(model: &str, config: &OnnxConfig) -> Result<Self, LoadError> {
        config.validate()?;
        let config_for_workers = config.clone();
        let make = move || -> Result<Box<dyn Worker>, LoadError> {
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
