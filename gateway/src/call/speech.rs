//! Speech jobs: decode the upload to 16 kHz mono, cut long audio in its
//! silences (found by the voice-activity model `audio.vad_model` names, a
//! job on that model's queue like any other) into chunks of at most
//! `audio.max_chunk_seconds`, run every chunk as a sibling job sharing the
//! request's deadline (the scheduler spreads them over the model's states),
//! and stitch the segments back with their times in the whole file.
//! Dropping the answer's future or stream (a disconnect) cancels every
//! chunk not yet done.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use infergate_backends::audio::{self, AudioError, DecodeLimits, SAMPLE_RATE};
use infergate_backends::{AudioTask, Task, TranscriptionOutput, TranscriptionRequest, VoiceActivityRequest};
use infergate_otel::names::spans;
use tracing::Instrument;

use super::outcome::Outcome;
use super::payload::{Payload, SpeechChunk};
use super::request::{finish, job, Call};
use crate::error::ApiError;

/// What the client asked for, apart from the audio.
#[derive(Debug, Clone)]
pub struct Ask {
    pub task: AudioTask,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: f32,
    /// The answer shows segment times.
    pub timestamps: bool,
}

/// Decoded audio and the chunks it will run as.
#[derive(Debug)]
pub struct Plan {
    samples: Arc<[f32]>,
    seconds: f64,
    chunks: Vec<(f64, f64)>,
}

/// What a streamed transcription produces, in order.
#[derive(Debug)]
pub enum SpeechEvent {
    /// One chunk's transcript, its segments timed in the whole file.
    Part(TranscriptionOutput),
    /// Every chunk's transcript stitched together; no event follows.
    Done(TranscriptionOutput),
    /// A chunk failed; no event follows.
    Failed(ApiError),
}

fn audio_error(error: AudioError) -> ApiError {
    match error {
        // Only the deadline stops a decode whose client is still waiting.
        AudioError::Stopped => ApiError::DeadlineExceeded,
        error => ApiError::invalid("file", error.to_string()),
    }
}

/// Raises its flag when dropped.
#[derive(Default)]
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl Call {
    /// Decode (off the async workers) and cut the audio into chunks.
    pub async fn speech_plan(&self, file: Bytes) -> Result<Plan, ApiError> {
        let config = &self.state().config;
        let limits = DecodeLimits {
            max_seconds: config.limits.max_audio_seconds,
            max_sample_rate: config.limits.max_audio_sample_rate,
        };
        let span = tracing::info_span!(spans::DECODE, audio.seconds = tracing::field::Empty);
        // The decoder stops between packets once this future is dropped (the
        // client left) or the deadline has passed.
        let stop = StopOnDrop::default();
        let flag = stop.0.clone();
        let deadline = self.deadline().map(tokio::time::Instant::into_std);
        let pcm = tokio::task::spawn_blocking(move || {
            let stopped =
                || flag.load(Ordering::Relaxed) || deadline.is_some_and(|d| std::time::Instant::now() >= d);
            audio::decode(&file, limits, &stopped)
        })
        .instrument(span.clone())
        .await
        .map_err(|e| ApiError::Internal { detail: format!("audio decoder stopped: {e}") })?
        .map_err(audio_error)?;
        drop(stop);
        let seconds = pcm.seconds();
        span.record("audio.seconds", seconds);
        let samples: Arc<[f32]> = pcm.samples.into();
        let max = config.audio.max_chunk_seconds;
        let chunks = match (&config.audio.vad_model, seconds > max) {
            (_, false) => vec![(0.0, seconds)],
            (None, true) => audio::split(&samples, None, max),
            (Some(vad), true) => {
                let speech = self.speech_segments(vad, samples.clone()).await?;
                audio::split(&samples, Some(&speech), max)
            }
        };
        Ok(Plan { samples, seconds, chunks })
    }

    /// Where the speech is, from the voice-activity model `name`: a job of
    /// this request on that model (its server span and metrics stay this
    /// request's).
    async fn speech_segments(&self, name: &str, pcm: Arc<[f32]>) -> Result<Vec<(f64, f64)>, ApiError> {
        let vad = self.state().model_for(name, Task::Tensor)?;
        let prepared = VoiceActivityRequest { pcm }.prepare(vad, &self.state().config.limits)?;
        let answer = job::<VoiceActivityRequest>(vad, self.ctx(), self.deadline(), prepared, None).await?;
        Ok(answer.output.segments)
    }

    /// Transcribe every chunk, and stitch.
    pub async fn transcribe(self, plan: Plan, ask: Ask) -> Result<TranscriptionOutput, ApiError> {
        let mut outcome = self.outcome();
        let mut jobs = self.chunk_jobs(&plan, &ask);
        let mut parts = Vec::with_capacity(plan.chunks.len());
        while let Some(part) = jobs.next().await {
            parts.push(part?);
        }
        self.settle_cache();
        let whole = stitch(parts, plan.seconds, &ask);
        self.capture_transcript(&whole);
        if self.keeps_content() {
            outcome.keep(serde_json::json!({ "output": crate::feedback::clip(&whole.text) }));
        }
        finish(outcome, None);
        Ok(whole)
    }

    /// Transcribe every chunk, each chunk's transcript as it is ready (in
    /// order), then the stitched whole.
    pub fn transcribe_stream(self, plan: Plan, ask: Ask) -> impl Stream<Item = SpeechEvent> + Send {
        let outcome = self.outcome();
        let jobs = self.chunk_jobs(&plan, &ask);
        let state = Streaming { jobs, parts: Vec::new(), outcome: Some(outcome), plan, ask, call: self };
        futures_util::stream::unfold(state, |mut state| async move {
            let outcome = state.outcome.take()?;
            let event = match state.jobs.next().await {
                Some(Ok(part)) => {
                    state.parts.push(part.clone());
                    state.outcome = Some(outcome);
                    SpeechEvent::Part(part)
                }
                Some(Err(error)) => SpeechEvent::Failed(error),
                None => {
                    state.call.settle_cache();
                    finish(outcome, None);
                    let parts = std::mem::take(&mut state.parts);
                    let whole = stitch(parts, state.plan.seconds, &state.ask);
                    state.call.capture_transcript(&whole);
                    SpeechEvent::Done(whole)
                }
            };
            Some((event, state))
        })
    }

    /// The chunks' jobs, all submitted at once, their outputs in order.
    fn chunk_jobs(
        &self,
        plan: &Plan,
        ask: &Ask,
    ) -> FuturesOrdered<impl Future<Output = Result<TranscriptionOutput, ApiError>> + Send> {
        let rate = f64::from(SAMPLE_RATE);
        let mut jobs = FuturesOrdered::new();
        for &(start, end) in &plan.chunks {
            let (from, to) = ((start * rate) as usize, ((end * rate) as usize).min(plan.samples.len()));
            let request = TranscriptionRequest {
                pcm: plan.samples[from..to].into(),
                offset: start,
                task: ask.task,
                language: ask.language.clone(),
                prompt: ask.prompt.clone(),
                temperature: ask.temperature,
                timestamps: ask.timestamps,
            };
            let prepared = SpeechChunk { request, seconds: end - start }.priced();
            let (model, ctx, deadline) = (self.model().clone(), self.ctx().clone(), self.deadline());
            let tally = self.cache_tally();
            jobs.push_back(async move {
                job::<SpeechChunk>(&model, &ctx, deadline, prepared, tally.as_deref())
                    .await
                    .map(|answer| answer.output)
            });
        }
        jobs
    }
}

impl Call {
    /// Capture a transcript the model was unsure of (`capture` on the model).
    fn capture_transcript(&self, whole: &TranscriptionOutput) {
        if let (Some(confidence), Some(_)) = (whole.confidence, &self.model().capture) {
            let content = serde_json::json!({ "output": crate::feedback::clip(&whole.text) });
            self.capture(confidence, "transcript_low_probability", content);
        }
    }
}

/// A streamed transcription between events.
struct Streaming<J> {
    jobs: J,
    parts: Vec<TranscriptionOutput>,
    /// `None` once the stream has ended.
    outcome: Option<Outcome>,
    plan: Plan,
    ask: Ask,
    call: Call,
}

/// One transcript from the chunks' outputs: segments renumbered, times
/// already in the whole file, the language the first chunk detected.
fn stitch(parts: Vec<TranscriptionOutput>, seconds: f64, ask: &Ask) -> TranscriptionOutput {
    let language = parts
        .first()
        .map(|p| p.language.clone())
        .or_else(|| ask.language.clone())
        .unwrap_or_else(|| "en".into());
    let mut segments = Vec::new();
    // The least sure chunk's confidence, where every chunk has one.
    let confidence = parts
        .iter()
        .map(|p| p.confidence)
        .try_fold(None, |least: Option<f64>, c| c.map(|c| Some(least.map_or(c, |l| l.min(c)))));
    let confidence = confidence.flatten();
    for part in parts {
        for mut segment in part.segments {
            segment.id = segments.len() as u32;
            segments.push(segment);
        }
    }
    let text = segments.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ");
    TranscriptionOutput { text, language, duration: seconds, segments, confidence }
}

#[cfg(test)]
mod tests {
    use infergate_backends::Segment;

    use super::*;

    #[test]
    fn stitching_renumbers_and_keeps_file_times() {
        let part = |offset: f64, texts: &[&str]| TranscriptionOutput {
            confidence: None,
            text: String::new(),
            language: "de".into(),
            duration: 30.0,
            segments: texts
                .iter()
                .enumerate()
                .map(|(i, t)| Segment {
                    id: i as u32,
                    start: offset + i as f64,
                    end: offset + i as f64 + 1.0,
                    text: (*t).into(),
                    avg_logprob: None,
                    no_speech_prob: None,
                })
                .collect(),
        };
        let ask = Ask {
            task: AudioTask::Transcribe,
            language: None,
            prompt: None,
            temperature: 0.0,
            timestamps: true,
        };
        let out = stitch(vec![part(0.0, &[" Hallo", " Welt"]), part(30.0, &[" Tschüss"])], 42.0, &ask);
        assert_eq!(out.text, "Hallo Welt Tschüss");
        assert_eq!(out.language, "de");
        assert_eq!(out.duration, 42.0);
        assert_eq!(
            out.segments.iter().map(|s| (s.id, s.start)).collect::<Vec<_>>(),
            vec![(0, 0.0), (1, 1.0), (2, 30.0)]
        );
    }
}
