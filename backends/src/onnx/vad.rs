//! Voice activity with silero VAD: a speech probability for every 32 ms
//! frame of 16 kHz mono audio, and speech segments from those
//! probabilities. It answers KServe tensors (`voice-activity`) and the
//! speech pipeline's [`Request::VoiceActivity`] jobs, whose segments tell
//! the gateway where to split long audio.
//!
//! The model is recurrent: each 512-sample frame goes in with the previous
//! 64 samples of context and the previous state. Several streams run in
//! lockstep as one batch (`[b, 576]` input, `[2, b, 128]` state).

use ort::session::Session;
use ort::value::Tensor;

use super::config::OnnxConfig;
use super::session::session;
use super::worker::{fail_all, InferError, Worker};
use crate::tensor::{DataType, Tensor as KTensor, TensorData};
use crate::{BackendError, Item, LoadError, Output, Request, TensorOutput, VoiceActivityOutput};

/// The sample rate the model takes.
const SAMPLE_RATE: u32 = 16_000;
/// Samples per frame (32 ms).
const FRAME: usize = 512;
const CONTEXT: usize = 64;
const STATE: usize = 128;

/// Silero VAD on one session.
struct Vad {
    session: Session,
}

impl Vad {
    /// Speech probability per frame, for each stream (a partial last frame
    /// is zero-padded). All streams advance together: one run per frame.
    /// Speech probability per frame of each stream; checks `stopped` every
    /// 64 frames (2 s of audio) and gives up once it says so.
    fn probabilities(
        &mut self,
        streams: &[&[f32]],
        stopped: &dyn Fn() -> bool,
    ) -> Result<Vec<Vec<f32>>, InferError> {
        let b = streams.len();
        let frames: Vec<usize> = streams.iter().map(|s| s.len().div_ceil(FRAME)).collect();
        let longest = frames.iter().copied().max().unwrap_or(0);
        let mut out: Vec<Vec<f32>> = frames.iter().map(|&n| Vec::with_capacity(n)).collect();
        let mut state = vec![0f32; 2 * b * STATE];
        let mut context = vec![0f32; b * CONTEXT];
        for frame in 0..longest {
            if frame % 64 == 0 && stopped() {
                return Err(InferError::Stopped);
            }
            let mut input = vec![0f32; b * (CONTEXT + FRAME)];
            for (row, stream) in streams.iter().enumerate() {
                let line = &mut input[row * (CONTEXT + FRAME)..(row + 1) * (CONTEXT + FRAME)];
                line[..CONTEXT].copy_from_slice(&context[row * CONTEXT..(row + 1) * CONTEXT]);
                let start = (frame * FRAME).min(stream.len());
                let end = ((frame + 1) * FRAME).min(stream.len());
                line[CONTEXT..CONTEXT + end - start].copy_from_slice(&stream[start..end]);
                context[row * CONTEXT..(row + 1) * CONTEXT].copy_from_slice(&line[FRAME..]);
            }
            let outputs = self.session.run(ort::inputs![
                "input" => Tensor::from_array(([b, CONTEXT + FRAME], input))?,
                "state" => Tensor::from_array(([2, b, STATE], state))?,
                "sr" => Tensor::from_array(((), vec![i64::from(SAMPLE_RATE)]))?,
            ])?;
            let (_, probs) = outputs[0].try_extract_tensor::<f32>()?;
            let (_, next) = outputs[1].try_extract_tensor::<f32>()?;
            if probs.len() != b || next.len() != 2 * b * STATE {
                return Err(InferError::Unexpected(format!(
                    "unexpected VAD output sizes {} and {}",
                    probs.len(),
                    next.len()
                )));
            }
            state = next.to_vec();
            for (row, p) in probs.iter().enumerate() {
                if frame < frames[row] {
                    out[row].push(*p);
                }
            }
        }
        Ok(out)
    }
}

/// How probabilities become speech segments (silero's own defaults).
#[derive(Debug, Clone, Copy)]
struct SpeechParams {
    /// Speech starts at this probability...
    threshold: f32,
    /// ... and ends below `threshold - 0.15` for `min_silence` seconds.
    min_silence: f64,
    /// Shorter speech is dropped.
    min_speech: f64,
    /// Each segment is widened by this much on both sides.
    pad: f64,
}

impl Default for SpeechParams {
    fn default() -> Self {
        SpeechParams { threshold: 0.5, min_silence: 0.1, min_speech: 0.25, pad: 0.03 }
    }
}

/// Speech segments `(start, end)` in seconds from per-frame probabilities of
/// audio `duration` seconds long.
fn speech_segments(probs: &[f32], duration: f64, params: SpeechParams) -> Vec<(f64, f64)> {
    let frame = FRAME as f64 / f64::from(SAMPLE_RATE);
    let off = params.threshold - 0.15;
    let mut segments: Vec<(f64, f64)> = Vec::new();
    let mut start: Option<f64> = None;
    let mut silent_since: Option<f64> = None;
    for (i, &p) in probs.iter().enumerate() {
        let t = i as f64 * frame;
        match start {
            None if p >= params.threshold => {
                start = Some(t);
                silent_since = None;
            }
            None => {}
            Some(s) => {
                if p >= params.threshold {
                    silent_since = None;
                } else if p < off {
                    let since = *silent_since.get_or_insert(t);
                    if t + frame - since >= params.min_silence {
                        segments.push((s, since));
                        start = None;
                        silent_since = None;
                    }
                }
            }
        }
    }
    if let Some(s) = start {
        segments.push((s, silent_since.unwrap_or(probs.len() as f64 * frame)));
    }
    segments
        .into_iter()
        .filter(|(s, e)| e - s >= params.min_speech)
        .map(|(s, e)| ((s - params.pad).max(0.0), (e + params.pad).min(duration)))
        .fold(Vec::new(), |mut merged: Vec<(f64, f64)>, (s, e)| {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
            merged
        })
}

/// The model: over KServe, input 0 is FP32 16 kHz mono audio (`[n]` or
/// `[1, n]`) and the outputs are `probabilities` (`[frames]`) and `segments`
/// (`[k, 2]`, seconds); the speech pipeline's
/// [`Request::VoiceActivity`] gets the segments alone.
pub(crate) struct VadWorker {
    vad: Vad,
}

impl VadWorker {
    pub(crate) fn load(config: &OnnxConfig) -> Result<Self, LoadError> {
        Ok(VadWorker { vad: Vad { session: session(&config.model, config)? } })
    }
}

/// An item's samples: copied out of a KServe tensor, or shared.
enum Samples {
    Tensor(Vec<f32>),
    Shared(std::sync::Arc<[f32]>),
}

impl std::ops::Deref for Samples {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            Samples::Tensor(samples) => samples,
            Samples::Shared(samples) => samples,
        }
    }
}

fn audio(request: &Request) -> Result<Samples, BackendError> {
    let invalid = |m: &str| BackendError::InvalidInput(m.into());
    let request = match request {
        Request::Tensor(request) => request,
        Request::VoiceActivity(request) if !request.pcm.is_empty() => {
            return Ok(Samples::Shared(request.pcm.clone()))
        }
        Request::VoiceActivity(_) => return Err(invalid("the audio holds no samples")),
        _ => return Err(invalid("this model serves KServe tensors only")),
    };
    let [input] = &request.inputs[..] else {
        return Err(invalid("expected one input: FP32 audio samples at 16 kHz, shape [n] or [1, n]"));
    };
    let mono = matches!(input.shape[..], [_] | [1, _]);
    match (&input.data, input.datatype, mono) {
        (TensorData::Float(samples), DataType::Fp32, true) if !samples.is_empty() => {
            Ok(Samples::Tensor(samples.iter().map(|&s| s as f32).collect()))
        }
        _ => Err(invalid("input must be non-empty FP32 audio samples at 16 kHz, shape [n] or [1, n]")),
    }
}

/// An item's answer, in the form its request asked for.
fn answer(request: &Request, probs: &[f32], segments: Vec<(f64, f64)>) -> Output {
    if matches!(request, Request::VoiceActivity(_)) {
        return Output::VoiceActivity(VoiceActivityOutput { segments });
    }
    let outputs = vec![
        KTensor {
            name: "probabilities".into(),
            datatype: DataType::Fp32,
            shape: vec![probs.len() as u64],
            data: TensorData::Float(probs.iter().map(|&p| f64::from(p)).collect()),
        },
        KTensor {
            name: "segments".into(),
            datatype: DataType::Fp32,
            shape: vec![segments.len() as u64, 2],
            data: TensorData::Float(segments.iter().flat_map(|&(s, e)| [s, e]).collect()),
        },
    ];
    Output::Tensor(TensorOutput { outputs })
}

impl Worker for VadWorker {
    fn run(&mut self, items: Vec<Item>) {
        let mut accepted = Vec::with_capacity(items.len());
        for item in items {
            match audio(&item.request) {
                Ok(samples) => accepted.push((item, samples)),
                Err(error) => item.fail(error),
            }
        }
        let streams: Vec<&[f32]> = accepted.iter().map(|(_, s)| &**s).collect();
        if streams.is_empty() {
            return;
        }
        let stopped = || accepted.iter().all(|(item, _)| item.stopped());
        let result = self.vad.probabilities(&streams, &stopped);
        match result {
            Ok(all) => {
                for ((item, samples), probs) in accepted.iter().zip(all) {
                    let duration = samples.len() as f64 / f64::from(SAMPLE_RATE);
                    let segments = speech_segments(&probs, duration, SpeechParams::default());
                    item.done(answer(&item.request, &probs, segments));
                }
            }
            Err(error) => {
                let items: Vec<Item> = accepted.into_iter().map(|(item, _)| item).collect();
                fail_all(&items, &error);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_need_enough_speech_and_silence_and_are_padded() {
        let frame = FRAME as f64 / f64::from(SAMPLE_RATE);
        // 10 silent frames, 20 speech frames, 10 silent, 2 speech (too short), 10 silent.
        let mut probs = vec![0.05; 10];
        probs.extend(vec![0.9; 20]);
        probs.extend(vec![0.05; 10]);
        probs.extend(vec![0.9; 2]);
        probs.extend(vec![0.05; 10]);
        let duration = probs.len() as f64 * frame;
        let segments = speech_segments(&probs, duration, SpeechParams::default());
        assert_eq!(segments.len(), 1, "{segments:?}");
        let (s, e) = segments[0];
        assert!((s - (10.0 * frame - 0.03)).abs() < 1e-9, "{s}");
        assert!((e - (30.0 * frame + 0.03)).abs() < 1e-9, "{e}");
        // Speech to the end of the audio closes at the end.
        let open = speech_segments(&[0.9; 20], 20.0 * frame, SpeechParams::default());
        assert_eq!(open.len(), 1);
        assert!((open[0].1 - 20.0 * frame).abs() < 1e-9);
    }
}
