//! Speech to text with whisper.cpp (`whisper-rs`): one model context, a pool
//! of decoding states on worker threads (one job per state at a time), each
//! job 16 kHz mono audio of at most 30 s — the gateway splits longer audio at
//! silences into sibling jobs and stitches their segments.
//!
//! Language given or detected; transcribe or translate to English; whisper's
//! temperature fallback (from the request's temperature in steps of
//! `temperature_increment` while decoding fails its entropy and log-prob
//! checks); an initial prompt; segment timestamps. A cancelled job is
//! skipped; one already decoding finishes its ≤ 30 s (whisper-rs 0.16's
//! `set_abort_callback_safe` casts its user data to the wrong type and
//! deadlocks or crashes, and the raw callback needs `unsafe`, which this
//! workspace forbids), so a disconnect stops work between chunks.

use std::path::PathBuf;
use std::sync::{Arc, Once};
use std::time::Instant;

use async_trait::async_trait;
use serde::Deserialize;
use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState};

use crate::pool::Pool;
use crate::{
    AudioTask, Backend, BackendError, BatchReport, Item, LoadError, ModelInfo, Output, Request, Segment,
    Task, TranscriptionOutput,
};

/// `backend = { kind = "whisper", ... }`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WhisperConfig {
    /// A whisper.cpp ggml model file (`scripts/setup.sh` converts them into models/whisper/).
    pub model: PathBuf,
    /// Decoding states, each on its own worker thread: jobs run in parallel
    /// up to this many (default: one per core). Set the model's
    /// `concurrency` to the same number.
    #[serde(default = "cores")]
    pub states: usize,
    /// Threads per job (keep states × threads ≤ cores).
    #[serde(default = "one")]
    pub threads: usize,
    /// Step of whisper's temperature fallback; 0 turns fallback off.
    #[serde(default = "default_increment")]
    pub temperature_increment: f32,
    /// Segments more likely silence than this are dropped by whisper.
    #[serde(default = "default_no_speech")]
    pub no_speech_threshold: f32,
    /// whisper.cpp's flash attention: off, as whisper-rs leaves it; on
    /// tiny.en here it made a 13 s clip 1.25x slower (BENCHMARKS.md,
    /// "Speech against faster-whisper").
    #[serde(default)]
    pub flash_attn: bool,
    /// How much of whisper's 30 s window the encoder computes (whisper.cpp's
    /// `audio_ctx`): `full`, as Whisper was trained and faster-whisper runs
    /// it, or `auto`: the job's own audio plus 2.56 s of the padding.
    #[serde(default)]
    pub audio_ctx: AudioContext,
}

/// `audio_ctx = "full" | "auto"`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AudioContext {
    #[default]
    Full,
    Auto,
}

/// Whisper's encoder sees 1500 positions (30 s, 20 ms each).
const FULL_AUDIO_CTX: usize = 1500;

/// Positions of padding kept after the audio under `audio_ctx = "auto"`.
/// With 64, short clips made tiny.en repeat itself until the token limit
/// (BENCHMARKS.md, "Speech: the encoder window").
const AUTO_AUDIO_CTX_MARGIN: usize = 128;

impl AudioContext {
    /// whisper.cpp's `audio_ctx` for `samples` of 16 kHz audio (0: all 1500).
    fn positions(self, samples: usize) -> i32 {
        let positions = samples.div_ceil(320) + AUTO_AUDIO_CTX_MARGIN;
        match self {
            AudioContext::Auto if positions < FULL_AUDIO_CTX => positions as i32,
            _ => 0,
        }
    }
}

fn one() -> usize {
    1
}
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
fn default_increment() -> f32 {
    0.2
}
fn default_no_speech() -> f32 {
    0.6
}

impl WhisperConfig {
    /// Range checks serde cannot express.
    pub(crate) fn validate(&self) -> Result<(), LoadError> {
        if self.states == 0 || self.threads == 0 {
            return Err(LoadError::Settings("states and threads must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.temperature_increment)
            || !(0.0..=1.0).contains(&self.no_speech_threshold)
        {
            return Err(LoadError::Settings(
                "temperature_increment and no_speech_threshold must be in [0, 1]",
            ));
        }
        Ok(())
    }
}

struct Worker {
    state: WhisperState,
    multilingual: bool,
    config: WhisperConfig,
}

/// A whisper.cpp model.
pub(crate) struct WhisperBackend {
    pool: Pool<Worker>,
}

impl WhisperBackend {
    /// Load the model and start `config.states` workers; fails with a
    /// message naming the file when it is missing or broken.
    pub(crate) fn load(config: &WhisperConfig) -> Result<Self, LoadError> {
        config.validate()?;
        static QUIET: Once = Once::new();
        // whisper.cpp and ggml print to stderr; the hooks route them to nothing.
        QUIET.call_once(whisper_rs::install_logging_hooks);
        let path = &config.model;
        if !path.is_file() {
            let hint = "scripts/setup.sh converts the Whisper models";
            return Err(LoadError::Missing { path: path.clone(), hint });
        }
        let mut params = WhisperContextParameters::default();
        params.flash_attn(config.flash_attn);
        let context = WhisperContext::new_with_params(path, params)
            .map_err(|e| LoadError::Model(format!("{}: {e}", path.display())))?;
        let context = Arc::new(context);
        let multilingual = context.is_multilingual();
        let shared = config.clone();
        let pool = Pool::start("whisper", config.states, move || {
            let state =
                context.create_state().map_err(|e| LoadError::Model(format!("whisper state: {e}")))?;
            Ok(Worker { state, multilingual, config: shared.clone() })
        })?;
        Ok(WhisperBackend { pool })
    }
}

/// whisper.cpp refuses less than 100 ms: shorter audio is padded with silence.
const MIN_SAMPLES: usize = 16_000;

impl Worker {
    fn transcribe(&mut self, item: &Item) -> Result<TranscriptionOutput, BackendError> {
        let Request::Transcription(request) = &item.request else {
            return Err(BackendError::InvalidInput("this model serves speech to text only".into()));
        };
        if request.task == AudioTask::Translate && !self.multilingual {
            return Err(BackendError::InvalidInput(
                "this is an English-only model: it cannot translate; use a multilingual model".into(),
            ));
        }
        let language = match (&request.language, self.multilingual) {
            (Some(code), true) => {
                if whisper_rs::get_lang_id(code).is_none() {
                    return Err(BackendError::InvalidInput(format!("unknown language '{code}'")));
                }
                code.clone()
            }
            (Some(code), false) if code != "en" => {
                return Err(BackendError::InvalidInput(format!(
                    "this model is English-only; got language '{code}'"
                )))
            }
            (_, false) => "en".into(),
            (None, true) => "auto".into(),
        };
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads as i32);
        params.set_translate(request.task == AudioTask::Translate);
        params.set_language(Some(&language));
        params.set_no_context(true);
        params.set_print_special(false);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_timestamps(false);
        params.set_temperature(request.temperature);
        params.set_temperature_inc(self.config.temperature_increment);
        params.set_no_speech_thold(self.config.no_speech_threshold);
        if let Some(prompt) = request.prompt.as_deref().filter(|p| !p.is_empty()) {
            params.set_initial_prompt(prompt);
        }
        let mut pcm: Vec<f32> = request.pcm.to_vec();
        let duration = pcm.len() as f64 / 16_000.0;
        if pcm.len() < MIN_SAMPLES {
            pcm.resize(MIN_SAMPLES, 0.0);
        }
        params.set_audio_ctx(self.config.audio_ctx.positions(pcm.len()));
        // Timestamp tokens only where the answer shows segment times.
        params.set_no_timestamps(!request.timestamps);
        let result = self.state.full(params, &pcm);
        result.map_err(|e| BackendError::Failed(format!("whisper: {e}")))?;
        let detected = whisper_rs::get_lang_str(self.state.full_lang_id_from_state()).unwrap_or("en");
        let mut segments = Vec::new();
        let mut confidence: Option<f64> = None;
        for segment in self.state.as_iter() {
            let text = segment.to_str_lossy().map_err(|e| BackendError::Failed(e.to_string()))?.into_owned();
            if is_non_speech(&text) {
                continue;
            }
            let logs: Vec<f64> = (0..segment.n_tokens())
                .filter_map(|t| segment.get_token(t))
                .map(|t| f64::from(t.token_data().plog))
                .collect();
            let avg_logprob =
                if logs.is_empty() { 0.0 } else { logs.iter().sum::<f64>() / logs.len() as f64 };
            let no_speech = f64::from(segment.no_speech_probability());
            let (sure, speech) = (avg_logprob.exp(), 1.0 - no_speech);
            let least = sure.min(speech).clamp(0.0, 1.0);
            confidence = Some(confidence.map_or(least, |c| c.min(least)));
            let start = (segment.start_timestamp() as f64 / 100.0).min(duration);
            let end = (segment.end_timestamp() as f64 / 100.0).clamp(start, duration);
            segments.push(Segment {
                id: segments.len() as u32,
                start: request.offset + start,
                end: request.offset + end,
                text,
                avg_logprob: Some(avg_logprob),
                no_speech_prob: Some(no_speech),
            });
        }
        let text =
            segments.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ");
        let language = if request.task == AudioTask::Translate { "en" } else { detected };
        Ok(TranscriptionOutput { text, language: language.into(), duration, segments, confidence })
    }
}

/// Whisper's captions for silence and noise (`[BLANK_AUDIO]`, `(music)`,
/// `[no audio]`): not speech, so not in the transcript.
fn is_non_speech(text: &str) -> bool {
    let t = text.trim();
    t.is_empty()
        || ((t.starts_with('[') && t.ends_with(']')) || (t.starts_with('(') && t.ends_with(')')))
            && !t[1..t.len() - 1].contains(['[', ']', '(', ')'])
}

impl Worker {
    fn run(&mut self, items: Vec<Item>) {
        for item in items {
            if item.cancel.is_cancelled() {
                item.fail(BackendError::Cancelled);
                continue;
            }
            match self.transcribe(&item) {
                Ok(output) => item.done(Output::Transcription(output)),
                Err(error) => item.fail(error),
            }
        }
    }
}

#[async_trait]
impl Backend for WhisperBackend {
    fn info(&self) -> ModelInfo {
        ModelInfo { owned_by: "infergate", platform: "whisper.cpp", capabilities: Default::default() }
    }

    fn supports(&self, task: Task) -> bool {
        task == Task::Transcription
    }

    async fn execute(&self, batch: Vec<Item>) -> BatchReport {
        let start = Instant::now();
        let items = batch.len();
        if let Err(error) = self.pool.run(move |worker| worker.run(batch)).await {
            tracing::error!(%error, "whisper batch failed");
        }
        BatchReport { items, elapsed: start.elapsed() }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn auto_audio_ctx_covers_the_audio_and_a_margin() {
        use super::AudioContext::{Auto, Full};
        assert_eq!(Full.positions(16_000), 0);
        assert_eq!(Auto.positions(16_000), 50 + 128);
        assert_eq!(Auto.positions(16_001), 51 + 128);
        assert_eq!(Auto.positions(10 * 16_000), 500 + 128);
        // Near 30 s the margin does not fit: the full window.
        assert_eq!(Auto.positions(28 * 16_000), 0);
    }

    #[test]
    fn bracketed_captions_are_not_speech() {
        for t in [" [BLANK_AUDIO]", "[no audio]", " (music)", "  "] {
            assert!(super::is_non_speech(t), "{t}");
        }
        for t in [" Hello [laughs] there", " (a) and (b)", " Thank you."] {
            assert!(!super::is_non_speech(t), "{t}");
        }
    }
}
