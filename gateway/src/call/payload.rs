//! What each task's job is: the backend request, its cost in the model's
//! unit, and the output it answers with.

use bytes::Bytes;
use infergate_backends::onnx::images;
use infergate_backends::{
    tokens, EmbeddingInput, EmbeddingsOutput, EmbeddingsRequest, ModerationInput, ModerationOutput,
    ModerationRequest, OcrOutput, OcrRequest, Output, Request, Task, TensorOutput, TensorRequest,
    TranscriptionOutput, TranscriptionRequest, VoiceActivityOutput, VoiceActivityRequest,
};
use serde_json::{json, Value};

use crate::feedback::clip;

use crate::config::Limits;
use crate::error::ApiError;
use crate::runner::{Cost, ModelHandle};
use crate::tenancy::Meter;

/// Tokens an answer used, for the GenAI metrics and the server span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    pub input: u32,
    /// `None` where the task generates no tokens (embeddings).
    pub output: Option<u32>,
}

/// A job's typed payload.
pub trait Payload: Sized {
    /// What the model answers.
    type Output;
    /// The task a model serves to take this job.
    const TASK: Task;
    /// What a tenant's limits count of the job's cost (`Cost::total`), if anything.
    const METER: Option<Meter> = None;

    /// Check what only the payload can tell (`limits`), and price the job
    /// for `model`.
    fn prepare(self, model: &ModelHandle, limits: &Limits) -> Result<(Request, Cost), ApiError>;

    /// This task's output, or `None` for another task's.
    fn output(output: Output) -> Option<Self::Output>;

    /// What the model learns from an answer (the tokens chat generates).
    fn observe(_output: &Self::Output, _model: &ModelHandle) {}

    /// The tokens an answer used, where the task counts tokens.
    fn usage(_output: &Self::Output) -> Option<Usage> {
        None
    }

    /// How sure the answer is, 0-1, where the task can tell, with what the
    /// number measures and the answer's content (for `capture`): `None`
    /// where it cannot.
    fn confidence(_output: &Self::Output, _threshold: f64) -> Option<(f64, &'static str, Value)> {
        None
    }

    /// The job's input as feedback keeps it (texts, cut at
    /// [`crate::feedback::MAX_CONTENT`]); `None` for inputs that are not
    /// text (images, audio, tensors).
    fn content(&self) -> Option<Value> {
        None
    }

    /// The answer as feedback keeps it (its text); `None` where it is not text.
    fn output_content(_output: &Self::Output) -> Option<Value> {
        None
    }

    /// Put what the answer says on the request's server span: its usage.
    fn record(output: &Self::Output, span: &tracing::Span) {
        if let Some(usage) = Self::usage(output) {
            usage.record(span);
        }
    }
}

impl Usage {
    /// `gen_ai.usage.input_tokens` (and `output_tokens`, where counted) on `span`.
    pub fn record(self, span: &tracing::Span) {
        span.record("gen_ai.usage.input_tokens", self.input);
        if let Some(output) = self.output {
            span.record("gen_ai.usage.output_tokens", output);
        }
    }

    /// The (input, output) tokens the GenAI metrics count.
    pub fn tokens(self) -> (u32, u32) {
        (self.input, self.output.unwrap_or(0))
    }
}

impl Payload for EmbeddingsRequest {
    type Output = EmbeddingsOutput;
    const TASK: Task = Task::Embeddings;
    const METER: Option<Meter> = Some(Meter::Tokens);

    /// Tokens: estimated for texts, counted for token ids.
    fn prepare(self, _: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        let (mut bytes, mut tokens) = (0, 0.0);
        for input in &self.inputs {
            match input {
                EmbeddingInput::Text(t) => {
                    bytes += t.len();
                    tokens += f64::from(tokens::estimate(t));
                }
                EmbeddingInput::Tokens(ids) => {
                    bytes += ids.len() * 4;
                    tokens += ids.len() as f64;
                }
            }
        }
        Ok((Request::Embeddings(self), Cost::whole(tokens, bytes)))
    }

    fn output(output: Output) -> Option<EmbeddingsOutput> {
        match output {
            Output::Embeddings(out) => Some(out),
            _ => None,
        }
    }

    fn usage(output: &EmbeddingsOutput) -> Option<Usage> {
        Some(Usage { input: output.prompt_tokens, output: None })
    }

    fn content(&self) -> Option<Value> {
        let texts = self.inputs.iter().filter_map(|i| match i {
            EmbeddingInput::Text(text) => Some(clip(text)),
            EmbeddingInput::Tokens(_) => None,
        });
        Some(json!(texts.collect::<Vec<_>>()))
    }
}

impl Payload for ModerationRequest {
    type Output = ModerationOutput;
    const TASK: Task = Task::Moderation;

    /// One unit per text or image.
    fn prepare(self, _: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        let inputs = self.groups.iter().flatten();
        let bytes = inputs
            .clone()
            .map(|i| match i {
                ModerationInput::Text(s) | ModerationInput::ImageUrl(s) => s.len(),
            })
            .sum();
        let cost = Cost::whole(inputs.count() as f64, bytes);
        Ok((Request::Moderation(self), cost))
    }

    fn output(output: Output) -> Option<ModerationOutput> {
        match output {
            Output::Moderation(out) => Some(out),
            _ => None,
        }
    }

    fn content(&self) -> Option<Value> {
        let texts = self.groups.iter().flatten().filter_map(|i| match i {
            ModerationInput::Text(text) => Some(clip(text)),
            ModerationInput::ImageUrl(_) => None,
        });
        Some(json!(texts.collect::<Vec<_>>()))
    }

    fn output_content(output: &ModerationOutput) -> Option<Value> {
        Some(json!(output.results.iter().map(|r| r.flagged).collect::<Vec<_>>()))
    }

    /// How far the scores are from the flagging `threshold`, the nearest
    /// one over all categories: 0 on the threshold, 1 at 0 or 1.
    fn confidence(output: &ModerationOutput, threshold: f64) -> Option<(f64, &'static str, Value)> {
        let margin = |score: f64| {
            let room = if score >= threshold { 1.0 - threshold } else { threshold };
            if room > 0.0 {
                ((score - threshold).abs() / room).min(1.0)
            } else {
                1.0
            }
        };
        let scores = output.results.iter().flat_map(|r| r.category_scores.values().copied());
        let nearest = scores.map(margin).reduce(f64::min)?;
        let flagged: Vec<bool> = output.results.iter().map(|r| r.flagged).collect();
        Some((nearest, "moderation_near_threshold", json!({ "output": { "flagged": flagged } })))
    }
}

/// An image for an OCR model.
#[derive(Debug)]
pub struct Image(pub Bytes);

impl Payload for Image {
    type Output = OcrOutput;
    const TASK: Task = Task::Ocr;

    /// Megapixels of the detector's input, from the size in the image's
    /// header, which must be within `limits.max_image_pixels`.
    fn prepare(self, _: &ModelHandle, limits: &Limits) -> Result<(Request, Cost), ApiError> {
        let (width, height) =
            images::dimensions(&self.0).map_err(|e| ApiError::invalid("image", e.to_string()))?;
        let pixels = u64::from(width) * u64::from(height);
        let limit = limits.max_image_pixels;
        if pixels > limit {
            return Err(ApiError::invalid(
                "image",
                format!("image is {width}x{height} = {pixels} pixels; the limit is {limit}"),
            ));
        }
        // The detector's run on the resized image is most of the work: its
        // size, bounded whatever the image's shape, is the cost.
        let (dw, dh) = infergate_backends::onnx::detector_size(width, height);
        let megapixels = f64::from(dw) * f64::from(dh) / 1e6;
        let bytes = self.0.len();
        Ok((Request::Ocr(OcrRequest { image: self.0 }), Cost::whole(megapixels, bytes)))
    }

    fn output(output: Output) -> Option<OcrOutput> {
        match output {
            Output::Ocr(out) => Some(out),
            _ => None,
        }
    }

    fn output_content(output: &OcrOutput) -> Option<Value> {
        Some(json!(output.lines.iter().map(|l| clip(&l.text)).collect::<Vec<_>>()))
    }

    /// The least confident line's mean character probability.
    fn confidence(output: &OcrOutput, _: f64) -> Option<(f64, &'static str, Value)> {
        let least = output.lines.iter().map(|l| f64::from(l.confidence)).reduce(f64::min)?;
        let lines: Vec<Value> =
            output.lines.iter().map(|l| json!({ "text": l.text, "confidence": l.confidence })).collect();
        Some((least, "ocr_line_confidence", json!({ "output": { "lines": lines } })))
    }
}

/// Decoded KServe tensors, and how many elements they hold.
#[derive(Debug)]
pub struct Tensors {
    pub request: TensorRequest,
    pub elements: u64,
}

impl Payload for Tensors {
    type Output = TensorOutput;
    const TASK: Task = Task::Tensor;

    /// A unit per thousand elements.
    fn prepare(self, _: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        let cost = Cost::whole(self.elements as f64 / 1000.0, self.elements as usize * 8);
        Ok((Request::Tensor(self.request), cost))
    }

    fn output(output: Output) -> Option<TensorOutput> {
        match output {
            Output::Tensor(out) => Some(out),
            _ => None,
        }
    }
}

/// One chunk of a speech request, `seconds` long.
#[derive(Debug)]
pub struct SpeechChunk {
    pub request: TranscriptionRequest,
    pub seconds: f64,
}

impl SpeechChunk {
    /// The job, priced in audio seconds.
    pub fn priced(self) -> (Request, Cost) {
        let cost = Cost::whole(self.seconds, self.request.pcm.len() * 4);
        (Request::Transcription(self.request), cost)
    }
}

impl Payload for SpeechChunk {
    type Output = TranscriptionOutput;
    const TASK: Task = Task::Transcription;
    const METER: Option<Meter> = Some(Meter::AudioSeconds);

    fn prepare(self, _: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        Ok(self.priced())
    }

    fn output(output: Output) -> Option<TranscriptionOutput> {
        match output {
            Output::Transcription(out) => Some(out),
            _ => None,
        }
    }
}

impl Payload for VoiceActivityRequest {
    type Output = VoiceActivityOutput;
    /// Voice-activity models are tensor models (KServe serves them too).
    const TASK: Task = Task::Tensor;

    /// In the unit of the same model's KServe jobs: a unit per thousand samples.
    fn prepare(self, _: &ModelHandle, _: &Limits) -> Result<(Request, Cost), ApiError> {
        let samples = self.pcm.len();
        Ok((Request::VoiceActivity(self), Cost::whole(samples as f64 / 1000.0, samples * 4)))
    }

    fn output(output: Output) -> Option<VoiceActivityOutput> {
        match output {
            Output::VoiceActivity(out) => Some(out),
            _ => None,
        }
    }
}
