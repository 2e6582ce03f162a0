//! `POST /v1/audio/transcriptions` and `/v1/audio/translations` (multipart).

use std::convert::Infallible;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use http::header;
use infergate_backends::audio::{AudioFormat, WavInfo, ACCEPTED};
use infergate_backends::{AudioTask, Task, TranscriptionOutput};
use infergate_otel::names::spans;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::extract::{encode, require_content_type};
use crate::call::{Ask, Call, Operation, SpeechEvent};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

/// The output formats OpenAI defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Text,
    Srt,
    VerboseJson,
    Vtt,
}

impl Format {
    fn parse(s: &str) -> Result<Format, ApiError> {
        Ok(match s {
            "json" => Format::Json,
            "text" => Format::Text,
            "srt" => Format::Srt,
            "verbose_json" => Format::VerboseJson,
            "vtt" => Format::Vtt,
            other => {
                return Err(ApiError::invalid(
                    "response_format",
                    format!(
                        "'response_format' must be one of json, text, srt, verbose_json, vtt; got '{other}'"
                    ),
                ))
            }
        })
    }
}

/// The multipart form, decoded and checked.
struct Form {
    file: Bytes,
    model: String,
    language: Option<String>,
    prompt: Option<String>,
    format: Format,
    temperature: f32,
    stream: bool,
}

async fn read_form(request: Request, state: &SharedState) -> Result<Form, ApiError> {
    require_content_type(&request, "multipart/form-data")?;
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text())))?;
    let field_error = |e: axum::extract::multipart::MultipartError| {
        if crate::api::extract::is_timeout(&e) {
            ApiError::BodyTimeout
        } else if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit: state.config.server.max_body_bytes }
        } else {
            ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text()))
        }
    };
    let (mut file, mut model, mut language, mut prompt, mut format, mut temperature) =
        (None, None, None, None, Format::Json, 0.0f32);
    let mut stream = false;
    while let Some(field) = multipart.next_field().await.map_err(field_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            file = Some(field.bytes().await.map_err(field_error)?);
            continue;
        }
        let value = field.text().await.map_err(field_error)?;
        match name.as_str() {
            "model" => model = Some(value),
            "language" => language = Some(value).filter(|v| !v.is_empty()),
            "prompt" => prompt = Some(value).filter(|v| !v.is_empty()),
            "response_format" => format = Format::parse(&value)?,
            "temperature" => {
                temperature =
                    value.parse::<f32>().ok().filter(|t| (0.0..=1.0).contains(t)).ok_or_else(|| {
                        ApiError::invalid("temperature", "'temperature' must be a number between 0 and 1")
                    })?
            }
            "timestamp_granularities[]" | "timestamp_granularities" => match value.as_str() {
                "segment" => {}
                "word" => {
                    return Err(ApiError::invalid(name, "word timestamps are not supported by this model"))
                }
                other => {
                    return Err(ApiError::invalid(name, format!("unknown timestamp granularity '{other}'")))
                }
            },
            "stream" => {
                stream = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(ApiError::invalid(
                            "stream",
                            format!("'stream' must be true or false, got '{other}'"),
                        ))
                    }
                }
            }
            // Other fields (`stream=false`, `chunking_strategy`, `include[]`) change nothing here.
            _ => {}
        }
    }
    let file = file.ok_or_else(|| ApiError::invalid("file", "the 'file' field is required"))?;
    let model = model.ok_or_else(|| ApiError::invalid("model", "the 'model' field is required"))?;
    if let Some(code) = &language {
        let valid = (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase());
        if !valid {
            return Err(ApiError::invalid(
                "language",
                format!("'language' must be an ISO-639-1 code such as 'en', got '{code}'"),
            ));
        }
    }
    Ok(Form { file, model, language, prompt, format, temperature, stream })
}

/// Check the upload is audio we can take, and estimate its length.
fn check_audio(file: &[u8], limit: u64) -> Result<f64, ApiError> {
    if file.is_empty() {
        return Err(ApiError::invalid("file", "the uploaded file is empty"));
    }
    if file.len() as u64 > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    match AudioFormat::sniff(file) {
        None => Err(ApiError::invalid("file", format!("unsupported file format: send {ACCEPTED}"))),
        Some(AudioFormat::Wav) => {
            let info = WavInfo::parse(file)
                .map_err(|e| ApiError::invalid("file", format!("invalid WAV file: {e}")))?;
            let seconds = info.duration();
            if info.data_bytes == 0 {
                return Err(ApiError::invalid("file", "the audio contains no samples"));
            }
            Ok(seconds)
        }
        // Compressed audio: about 128 kbit/s until the decoder knows better.
        Some(_) => Ok(file.len() as f64 / 16_000.0),
    }
}

async fn handle(
    state: SharedState,
    ctx: RequestContext,
    request: Request,
    task: AudioTask,
) -> Result<Response, ApiError> {
    let form = read_form(request, &state).instrument(tracing::info_span!(spans::DECODE)).await?;
    let operation = match task {
        AudioTask::Transcribe => Operation::Transcription,
        AudioTask::Translate => Operation::SpeechTranslation,
    };
    let call = Call::open(&state, ctx, Some(&form.model), Task::Transcription, operation).await?;
    // Not audio at all, or an empty or broken WAV: refused before decoding.
    check_audio(&form.file, state.config.limits.max_audio_bytes)?;
    let plan = call.speech_plan(form.file).await?;
    // Streamed segments carry their times, as the three timed formats do.
    let timestamps = form.stream || matches!(form.format, Format::VerboseJson | Format::Srt | Format::Vtt);
    let ask =
        Ask { task, language: form.language, prompt: form.prompt, temperature: form.temperature, timestamps };
    if form.stream {
        let events = until_grace(call.transcribe_stream(plan, ask), state.readiness.grace_over.clone());
        return Ok(Sse::new(sse(events)).keep_alive(KeepAlive::default()).into_response());
    }
    let tally = call.cache_tally();
    let out = call.transcribe(plan, ask).await?;
    let task_name = match task {
        AudioTask::Transcribe => "transcribe",
        AudioTask::Translate => "translate",
    };
    let mut response = encode(|| render(&out, form.format, task_name, form.temperature));
    if let Some(status) = tally.and_then(|t| t.status()) {
        response.headers_mut().insert(crate::api::extract::CACHE_HEADER, status.header());
    }
    Ok(response)
}

/// The events until the shutdown grace ends with the stream still open;
/// then an `error` event saying so (code `shutting_down`) ends it.
fn until_grace(
    events: impl Stream<Item = SpeechEvent> + Send + 'static,
    grace_over: CancellationToken,
) -> impl Stream<Item = SpeechEvent> {
    stream::unfold((Box::pin(events), Some(grace_over)), |(mut events, grace)| async move {
        // `None` once the final event has gone out.
        let grace = grace?;
        tokio::select! {
            event = events.next() => {
                let event = event?;
                let last = matches!(event, SpeechEvent::Done(_) | SpeechEvent::Failed(_));
                Some((event, (events, (!last).then_some(grace))))
            }
            () = grace.cancelled() => Some((SpeechEvent::Failed(ApiError::ShuttingDown), (events, None))),
        }
    })
}

/// `stream=true`: OpenAI's transcription events as server-sent events — a
/// `transcript.text.segment` and a `transcript.text.delta` per segment as
/// chunks finish, in order, then `transcript.text.done` with the whole text
/// (or an `error` event).
fn sse(events: impl Stream<Item = SpeechEvent>) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let event = |value: serde_json::Value| Ok(SseEvent::default().data(value.to_string()));
    let mut next_id = 0u32;
    events
        .map(move |speech| {
            let lines: Vec<Result<SseEvent, Infallible>> = match speech {
                SpeechEvent::Part(part) => part
                    .segments
                    .iter()
                    .flat_map(|segment| {
                        let id = next_id;
                        next_id += 1;
                        [
                            event(json!({
                                "type": "transcript.text.segment",
                                "id": id, "start": segment.start, "end": segment.end, "text": segment.text,
                            })),
                            event(json!({ "type": "transcript.text.delta", "delta": segment.text })),
                        ]
                    })
                    .collect(),
                SpeechEvent::Failed(error) => {
                    let parts = error.parts();
                    vec![event(json!({ "type": "error", "error": { "message": error.to_string(), "code": parts.code } }))]
                }
                SpeechEvent::Done(done) => vec![event(json!({
                    "type": "transcript.text.done",
                    "text": done.text,
                    "language": done.language,
                    "usage": { "type": "duration", "seconds": done.duration.ceil() },
                }))],
            };
            futures_util::stream::iter(lines)
        })
        .flatten()
}

fn render(out: &TranscriptionOutput, format: Format, task: &str, temperature: f32) -> Response {
    let text = |body: String, mime: &'static str| ([(header::CONTENT_TYPE, mime)], body).into_response();
    match format {
        Format::Json => Json(json!({ "text": out.text })).into_response(),
        Format::Text => text(format!("{}\n", out.text), "text/plain; charset=utf-8"),
        Format::Srt => text(subtitles(out, false), "application/x-subrip; charset=utf-8"),
        Format::Vtt => text(subtitles(out, true), "text/vtt; charset=utf-8"),
        Format::VerboseJson => {
            let segments: Vec<_> = out
                .segments
                .iter()
                .map(|s| {
                    let mut segment = json!({
                        "id": s.id,
                        "seek": (s.start * 100.0).round() as u64,
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "tokens": [],
                        "temperature": temperature,
                    });
                    // Where the model tells them (whisper.cpp, an upstream's verbose_json).
                    let known = [("avg_logprob", s.avg_logprob), ("no_speech_prob", s.no_speech_prob)];
                    for (name, value) in known {
                        if let Some(value) = value.filter(|v| v.is_finite()) {
                            segment[name] = json!(value);
                        }
                    }
                    segment
                })
                .collect();
            Json(json!({
                "task": task,
                "language": out.language,
                "duration": out.duration,
                "text": out.text,
                "segments": segments,
            }))
            .into_response()
        }
    }
}

/// SubRip or WebVTT cues, one per segment.
fn subtitles(out: &TranscriptionOutput, vtt: bool) -> String {
    let stamp = |secs: f64| {
        let ms = (secs.max(0.0) * 1000.0).round() as u64;
        let sep = if vtt { '.' } else { ',' };
        format!("{:02}:{:02}:{:02}{sep}{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
    };
    let mut text = if vtt { "WEBVTT\n\n".to_owned() } else { String::new() };
    for (i, s) in out.segments.iter().enumerate() {
        if !vtt {
            text.push_str(&format!("{}\n", i + 1));
        }
        text.push_str(&format!("{} --> {}\n{}\n\n", stamp(s.start), stamp(s.end), s.text.trim()));
    }
    text
}

/// Speech to text in the spoken language.
pub async fn transcriptions(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    handle(state, ctx, request, AudioTask::Transcribe).await
}

/// Speech to English text.
pub async fn translations(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    handle(state, ctx, request, AudioTask::Translate).await
}

/// The fuzz target's way in (`fuzz/`): the form read and the file checked.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn fuzz(request: Request, state: &SharedState) -> Result<(), ApiError> {
    let form = read_form(request, state).await?;
    check_audio(&form.file, state.config.limits.max_audio_bytes).map(drop)
}

#[cfg(test)]
mod tests {
    use infergate_backends::Segment;

    use super::*;

    #[test]
    fn writes_srt_and_vtt_timestamps() {
        let out = TranscriptionOutput {
            confidence: None,
            text: "a b".into(),
            language: "en".into(),
            duration: 3725.5,
            segments: vec![
                Segment {
                    id: 0,
                    start: 0.0,
                    end: 1.25,
                    text: " a".into(),
                    avg_logprob: Some(-0.25),
                    no_speech_prob: Some(0.01),
                },
                Segment {
                    id: 1,
                    start: 3600.0,
                    end: 3725.5,
                    text: " b".into(),
                    avg_logprob: None,
                    no_speech_prob: None,
                },
            ],
        };
        assert_eq!(
            subtitles(&out, false),
            "1\n00:00:00,000 --> 00:00:01,250\na\n\n2\n01:00:00,000 --> 01:02:05,500\nb\n\n"
        );
        assert!(subtitles(&out, true).starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:01.250\na\n"));
    }
}
