//! Deterministic outputs of the synthetic backend, one function per task.

use std::collections::BTreeMap;

use infergate_rng::SplitMix64;

use super::rng::fnv1a;
use crate::tensor::Tensor;
use crate::{
    tokens, AudioTask, BackendError, ChatOutput, ChatRequest, EmbeddingInput, EmbeddingsOutput,
    EmbeddingsRequest, FinishReason, ModerationInput, ModerationOutput, ModerationRequest, ModerationResult,
    Output, Segment, TensorOutput, TensorRequest, TranscriptionOutput, TranscriptionRequest,
};

const VOCABULARY: [&str; 32] = [
    "the",
    "model",
    "answers",
    "quickly",
    "with",
    "a",
    "short",
    "and",
    "plain",
    "reply",
    "about",
    "your",
    "question",
    "while",
    "every",
    "word",
    "here",
    "is",
    "generated",
    "from",
    "a",
    "hash",
    "of",
    "the",
    "prompt",
    "so",
    "tests",
    "can",
    "rely",
    "on",
    "it",
    "today",
];

/// A chat reply: the words to stream (each with its leading space) and the
/// final output. The reply is labelled, depends only on the request, and
/// honours `max_tokens` and stop sequences.
pub fn chat(model: &str, req: &ChatRequest) -> (Vec<String>, Output) {
    let mut key = Vec::new();
    for m in &req.messages {
        key.extend_from_slice(m.role.as_bytes());
        key.push(0);
        key.extend_from_slice(m.content.as_bytes());
        key.push(0);
    }
    let mut rng = SplitMix64::new(fnv1a(&key) ^ req.seed.unwrap_or(0));
    let wanted = 8 + (rng.next_u64() % 24) as usize;
    let mut candidates = vec![format!("[synthetic {model}]")];
    candidates.extend((1..wanted).map(|_| VOCABULARY[(rng.next_u64() % 32) as usize].to_owned()));

    let mut words = Vec::new();
    let mut text = String::new();
    let mut finish = FinishReason::Stop;
    for (i, word) in candidates.into_iter().enumerate() {
        if words.len() >= req.max_tokens as usize {
            finish = FinishReason::Length;
            break;
        }
        let piece = if i == 0 { word } else { format!(" {word}") };
        let joined = format!("{text}{piece}");
        if let Some(at) = req.stop.iter().filter_map(|s| joined.find(s.as_str())).min() {
            let cut = joined[text.len()..at].to_owned();
            if !cut.is_empty() {
                words.push(cut.clone());
                text.push_str(&cut);
            }
            break;
        }
        text = joined;
        words.push(piece);
    }
    let prompt_tokens = req.messages.iter().map(|m| tokens::estimate(&m.content) + 4).sum();
    let completion_tokens = tokens::saturate(words.len());
    (
        words,
        Output::Chat(ChatOutput {
            text,
            finish_reason: finish,
            prompt_tokens,
            completion_tokens,
            upstream: None,
        }),
    )
}

/// Bag-of-words feature hashing, L2-normalised: texts that share words get
/// closer vectors, which keeps similarity tests meaningful.
pub fn embeddings(req: &EmbeddingsRequest, dimensions: u32) -> Result<Output, BackendError> {
    let dims = match req.dimensions {
        Some(d) if d > dimensions => {
            return Err(BackendError::InvalidInput(format!(
                "dimensions: this model produces at most {dimensions}"
            )))
        }
        Some(d) => d as usize,
        None => dimensions as usize,
    };
    let mut prompt_tokens = 0u32;
    let vectors = req
        .inputs
        .iter()
        .map(|input| {
            let mut v = vec![0f32; dims];
            let mut add = |h: u64| {
                let sign = if h >> 63 == 0 { 1.0 } else { -1.0 };
                v[(h % dims as u64) as usize] += sign;
            };
            match input {
                EmbeddingInput::Text(t) => {
                    prompt_tokens = prompt_tokens.saturating_add(tokens::estimate(t));
                    t.split_whitespace().for_each(|w| add(fnv1a(w.to_lowercase().as_bytes())));
                }
                EmbeddingInput::Tokens(ids) => {
                    prompt_tokens = prompt_tokens.saturating_add(tokens::saturate(ids.len()));
                    ids.iter().for_each(|id| add(fnv1a(&id.to_le_bytes())));
                }
            }
            normalise(&mut v);
            v
        })
        .collect();
    Ok(Output::Embeddings(EmbeddingsOutput { vectors, prompt_tokens }))
}

fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else if let Some(first) = v.first_mut() {
        *first = 1.0;
    }
}

/// A labelled transcript whose length follows the audio's: one segment per
/// ten seconds, with timestamps that cover the file.
pub fn transcription(req: &TranscriptionRequest) -> Result<Output, BackendError> {
    let duration = req.pcm.len() as f64 / f64::from(crate::audio::SAMPLE_RATE);
    let verb = match req.task {
        AudioTask::Transcribe => "transcription",
        AudioTask::Translate => "translation",
    };
    let count = (duration / 10.0).ceil().max(1.0) as u32;
    let segments: Vec<Segment> = (0..count)
        .map(|i| Segment {
            id: i,
            start: req.offset + f64::from(i) * 10.0,
            end: req.offset + (f64::from(i + 1) * 10.0).min(duration),
            text: format!(" [synthetic {verb}, segment {}]", i + 1),
            avg_logprob: None,
            no_speech_prob: None,
        })
        .collect();
    let text = segments.iter().map(|s| s.text.trim()).collect::<Vec<_>>().join(" ");
    let language = match req.task {
        AudioTask::Translate => "en".to_owned(),
        AudioTask::Transcribe => req.language.clone().unwrap_or_else(|| "en".to_owned()),
    };
    Ok(Output::Transcription(TranscriptionOutput { text, language, duration, segments, confidence: None }))
}

/// OpenAI's moderation categories, and whether images are judged for each.
const CATEGORIES: [(&str, bool); 13] = [
    ("harassment", false),
    ("harassment/threatening", false),
    ("hate", false),
    ("hate/threatening", false),
    ("illicit", false),
    ("illicit/violent", false),
    ("self-harm", true),
    ("self-harm/intent", true),
    ("self-harm/instructions", true),
    ("sexual", true),
    ("sexual/minors", false),
    ("violence", true),
    ("violence/graphic", true),
];

/// The word that makes the synthetic moderator flag a text as violent.
pub const FLAG_MARKER: &str = "synthetic-flag";

/// Low deterministic scores; texts containing [`FLAG_MARKER`] are flagged
/// for violence, so tests can see both outcomes.
pub fn moderation(req: &ModerationRequest) -> Output {
    let results = req
        .groups
        .iter()
        .map(|group| {
            let mut seed = 0u64;
            let mut marked = false;
            for input in group {
                let (ModerationInput::Text(s) | ModerationInput::ImageUrl(s)) = input;
                seed ^= fnv1a(s.as_bytes());
                marked |= matches!(input, ModerationInput::Text(t) if t.contains(FLAG_MARKER));
            }
            let mut rng = SplitMix64::new(seed);
            let mut result = ModerationResult {
                flagged: false,
                categories: BTreeMap::new(),
                category_scores: BTreeMap::new(),
                category_applied_input_types: BTreeMap::new(),
            };
            for (name, images) in CATEGORIES {
                let types: Vec<String> = group
                    .iter()
                    .map(ModerationInput::kind)
                    .filter(|kind| *kind == "text" || images)
                    .map(str::to_owned)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut score = if types.is_empty() { 0.0 } else { rng.next_f64() * 0.01 };
                if marked && name == "violence" {
                    score = 0.99;
                }
                result.categories.insert(name.to_owned(), score >= 0.5);
                result.category_scores.insert(name.to_owned(), score);
                result.category_applied_input_types.insert(name.to_owned(), types);
            }
            result.flagged = result.categories.values().any(|f| *f);
            result
        })
        .collect();
    Output::Moderation(ModerationOutput { results })
}

/// One labelled line over the whole image, whose size comes from its header.
pub fn ocr(req: &crate::OcrRequest) -> Result<Output, BackendError> {
    let (width, height) = image::ImageReader::new(std::io::Cursor::new(&req.image))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .ok_or_else(|| BackendError::InvalidInput("image cannot be read".into()))?;
    let (w, h) = (width as f32, height as f32);
    Ok(Output::Ocr(crate::OcrOutput {
        width,
        height,
        lines: vec![crate::OcrLine {
            text: format!("synthetic text of a {width}x{height} image"),
            confidence: 1.0,
            corners: [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]],
        }],
    }))
}

/// The identity model: `OUTPUTi` is `inputs[i]` with the same shape and type.
pub fn tensor(req: &TensorRequest) -> Result<Output, BackendError> {
    let all: Vec<Tensor> = req
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| Tensor { name: format!("OUTPUT{i}"), ..t.clone() })
        .collect();
    if let Some(unknown) = req.outputs.iter().find(|name| !all.iter().any(|t| &t.name == *name)) {
        return Err(BackendError::InvalidInput(format!(
            "unknown output '{unknown}': this model has OUTPUT0..OUTPUT{}",
            all.len().saturating_sub(1)
        )));
    }
    let outputs = if req.outputs.is_empty() {
        all
    } else {
        all.into_iter().filter(|t| req.outputs.contains(&t.name)).collect()
    };
    Ok(Output::Tensor(TensorOutput { outputs }))
}
