//! Speech jobs: decode the upload to 16 kHz mono, cut long audio in its
//! silences into chunks of at most `audio.max_chunk_seconds`, run every
//! chunk as a sibling job sharing the request's deadline (the scheduler
//! spreads them over the model's states), and stitch the segments back with
//! their times in the whole file. Dropping the handler (a disconnect)
//! cancels every chunk not yet done.

use std::convert::Infallible;
use std::sync::Arc;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, Stream, StreamExt};
use infergate_backends::audio::{self, AudioError, SAMPLE_RATE};
use infergate_backends::onnx::vad;
use infergate_backends::{AudioTask, Output, Request, TranscriptionOutput, TranscriptionRequest};
use infergate_otel::names::spans;
use serde_json::json;
use tracing::Instrument;

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::runner::{Cost, ModelHandle};
use crate::state::SharedState;

/// What the client asked for, apart from the audio.
pub struct Ask {
    pub task: AudioTask,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: f32,
}

/// Decoded audio and the chunks it will run as.
pub struct Plan {
    pub samples: Arc<[f32]>,
    pub seconds: f64,
    pub chunks: Vec<(f64, f64)>,
}

fn audio_error(error: AudioError) -> ApiError {
    ApiError::invalid("file", error.to_string())
}

/// Decode (off the async workers) and cut.
pub async fn plan(state: &SharedState, file: Bytes) -> Result<Plan, ApiError> {
    let limit = state.config.limits.max_audio_seconds;
    let span = tracing::info_span!(spans::DECODE, audio.seconds = tracing::field::Empty);
    let pcm = tokio::task::spawn_blocking(move || audio::decode(&file, limit))
        .instrument(span.clone())
        .await
        .map_err(|e| ApiError::Internal { detail: format!("audio decoder stopped: {e}") })?
        .map_err(audio_error)?;
    let seconds = pcm.seconds();
    span.record("audio.seconds", seconds);
    let samples: Arc<[f32]> = pcm.samples.into();
    let max = state.config.audio.max_chunk_seconds;
    let chunks = match (&state.vad, seconds > max) {
        (_, false) => vec![(0.0, seconds)],
        (None, true) => audio::split(&samples, None, max),
        (Some(vad), true) => {
            let (vad, audio) = (vad.clone(), samples.clone());
            let speech = tokio::task::spawn_blocking(move || {
                let mut vad = vad.lock().map_err(|_| "voice activity detector poisoned".to_owned())?;
                let probs = vad.probabilities(&[&audio])?.pop().unwrap_or_default();
                Ok::<_, String>(vad::speech_segments(
                    &probs,
                    audio.len() as f64 / f64::from(SAMPLE_RATE),
                    vad::SpeechParams::default(),
                ))
            })
            .await
            .map_err(|e| ApiError::Internal { detail: format!("voice activity detection stopped: {e}") })?
            .map_err(|detail| ApiError::Internal { detail })?;
            audio::split(&samples, Some(&speech), max)
        }
    };
    Ok(Plan { samples, seconds, chunks })
}

/// The chunks' outputs, in order, as each completes (all run at once).
pub fn run(
    ctx: &RequestContext,
    model: &Arc<ModelHandle>,
    plan: &Plan,
    ask: &Ask,
) -> FuturesOrdered<impl std::future::Future<Output = Result<TranscriptionOutput, ApiError>>> {
    let deadline = ctx.deadline(model.default_timeout);
    let rate = f64::from(SAMPLE_RATE);
    plan.chunks
        .iter()
        .map(|&(start, end)| {
            let (from, to) = ((start * rate) as usize, ((end * rate) as usize).min(plan.samples.len()));
            let request = TranscriptionRequest {
                pcm: plan.samples[from..to].into(),
                offset: start,
                task: ask.task,
                language: ask.language.clone(),
                prompt: ask.prompt.clone(),
                temperature: ask.temperature,
            };
            let (model, ctx) = (model.clone(), ctx.clone());
            async move {
                let running = model
                    .submit(&ctx, Request::Transcription(request), Cost::whole(end - start, (to - from) * 4))
                    .await?;
                match running.output_by(deadline).await? {
                    Output::Transcription(out) => Ok(out),
                    _ => Err(ApiError::Internal {
                        detail: "speech backend returned another task's output".into(),
                    }),
                }
            }
        })
        .collect()
}

/// One transcript from the chunks' outputs: segments renumbered, times
/// already in the whole file, the language the first chunk detected.
pub fn stitch(parts: Vec<TranscriptionOutput>, seconds: f64, ask: &Ask) -> TranscriptionOutput {
    let language = parts
        .first()
        .map(|p| p.language.clone())
        .or_else(|| ask.language.clone())
        .unwrap_or_else(|| "en".into());
    let mut segments = Vec::new();
    for part in parts {
        for mut segment in part.segments {
            segment.id = segments.len() as u32;
            segments.push(segment);
        }
    }
    let text = segments.iter().map(|s| s.text.trim()).filter(|t| !t.is_empty()).collect::<Vec<_>>().join(" ");
    TranscriptionOutput { text, language, duration: seconds, segments }
}

/// Wait for every chunk.
pub async fn transcribe(
    ctx: &RequestContext,
    model: &Arc<ModelHandle>,
    plan: &Plan,
    ask: &Ask,
) -> Result<TranscriptionOutput, ApiError> {
    let mut jobs = run(ctx, model, plan, ask);
    let mut parts = Vec::with_capacity(plan.chunks.len());
    while let Some(part) = jobs.next().await {
        parts.push(part?);
    }
    Ok(stitch(parts, plan.seconds, ask))
}

/// `stream=true`: OpenAI's transcription events as server-sent events — a
/// `transcript.text.segment` and a `transcript.text.delta` per segment as
/// chunks finish, in order, then `transcript.text.done` with the whole text
/// (or an `error` event).
pub fn stream(
    ctx: RequestContext,
    model: Arc<ModelHandle>,
    plan: Plan,
    ask: Ask,
    outcome: Outcome,
) -> Response {
    let events = async_stream(ctx, model, plan, ask, outcome);
    Sse::new(events).keep_alive(KeepAlive::default()).into_response()
}

fn async_stream(
    ctx: RequestContext,
    model: Arc<ModelHandle>,
    plan: Plan,
    ask: Ask,
    outcome: Outcome,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let jobs = run(&ctx, &model, &plan, &ask);
    let event = |value: serde_json::Value| Ok(SseEvent::default().data(value.to_string()));
    futures_util::stream::unfold(
        (jobs, Vec::new(), Some(outcome), plan.seconds, ask, 0u32),
        move |(mut jobs, mut parts, mut outcome, seconds, ask, mut next_id)| async move {
            outcome.as_ref()?;
            let events: Vec<Result<SseEvent, Infallible>> = match jobs.next().await {
                Some(Ok(part)) => {
                    let mut out = Vec::new();
                    for segment in &part.segments {
                        out.push(event(json!({
                            "type": "transcript.text.segment",
                            "id": next_id, "start": segment.start, "end": segment.end, "text": segment.text,
                        })));
                        out.push(event(json!({ "type": "transcript.text.delta", "delta": segment.text })));
                        next_id += 1;
                    }
                    parts.push(part);
                    out
                }
                Some(Err(error)) => {
                    outcome = None;
                    let parts = error.parts();
                    vec![event(json!({ "type": "error", "error": { "message": error.to_string(), "code": parts.code } }))]
                }
                None => {
                    if let Some(outcome) = outcome.take() {
                        outcome.answered(None);
                    }
                    let done = stitch(std::mem::take(&mut parts), seconds, &ask);
                    vec![event(json!({
                        "type": "transcript.text.done",
                        "text": done.text,
                        "language": done.language,
                        "usage": { "type": "duration", "seconds": seconds.ceil() },
                    }))]
                }
            };
            Some((futures_util::stream::iter(events), (jobs, parts, outcome, seconds, ask, next_id)))
        },
    )
    .flatten()
}

#[cfg(test)]
mod tests {
    use infergate_backends::Segment;

    use super::*;

    #[test]
    fn stitching_renumbers_and_keeps_file_times() {
        let part = |offset: f64, texts: &[&str]| TranscriptionOutput {
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
                })
                .collect(),
        };
        let ask = Ask { task: AudioTask::Transcribe, language: None, prompt: None, temperature: 0.0 };
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
