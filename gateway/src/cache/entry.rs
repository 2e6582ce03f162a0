//! A stored answer and what it weighs.

use std::sync::Arc;

use infergate_backends::{Event, Output};

/// A stored answer.
#[derive(Debug)]
pub struct Entry {
    pub output: Output,
    /// A streamed answer's pieces as they were sent, to replay them alike.
    pub deltas: Option<Arc<[String]>>,
    /// What it holds, roughly, for `max_bytes`.
    pub(super) bytes: u32,
}

impl Entry {
    pub(super) fn new(output: Output, deltas: Option<Arc<[String]>>) -> Arc<Self> {
        let streamed: usize = deltas.iter().flat_map(|d| d.iter()).map(|d| d.len() + 24).sum();
        let bytes = (output_bytes(&output) + streamed + 160).min(u32::MAX as usize) as u32;
        Arc::new(Entry { output, deltas, bytes })
    }

    /// The answer as a stream's events: its pieces as first sent (one piece
    /// if it was not streamed), then the whole.
    pub fn replay(&self) -> std::collections::VecDeque<Event> {
        let mut events: std::collections::VecDeque<Event> = match (&self.deltas, &self.output) {
            (Some(deltas), _) => deltas.iter().cloned().map(Event::Delta).collect(),
            (None, Output::Chat(chat)) if !chat.text.is_empty() => [Event::Delta(chat.text.clone())].into(),
            (None, _) => Default::default(),
        };
        events.push_back(Event::Done(self.output.clone()));
        events
    }
}

/// Heap bytes an output holds, roughly.
fn output_bytes(output: &Output) -> usize {
    match output {
        Output::Chat(chat) => chat.text.len() + chat.upstream.as_ref().map_or(0, |u| u.body.len()),
        Output::Embeddings(e) => e.vectors.iter().map(|v| v.len() * 4 + 24).sum(),
        Output::Transcription(t) => {
            t.text.len() + t.language.len() + t.segments.iter().map(|s| s.text.len() + 48).sum::<usize>()
        }
        Output::Moderation(m) => m
            .results
            .iter()
            .map(|r| {
                let scores: usize = r.category_scores.keys().map(|k| k.len() + 40).sum();
                2 * scores + r.category_applied_input_types.len() * 48
            })
            .sum(),
        Output::Tensor(t) => {
            t.outputs.iter().map(|o| o.name.len() + o.shape.len() * 8 + o.data.len() * 16).sum()
        }
        Output::Ocr(o) => o.lines.iter().map(|l| l.text.len() + 64).sum(),
        Output::VoiceActivity(v) => v.segments.len() * 16,
    }
}
