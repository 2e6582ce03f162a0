//! One chat answer as it is generated, shared by the in-process chat
//! engines: the text so far, what of it has been streamed, stop sequences
//! (found in the newest text only, not by rescanning the answer), the token
//! limit, and the terminal event.

use std::time::{Duration, Instant};

use crate::{ChatOutput, ChatRequest, Event, FinishReason, Item, Output, StepReport};

pub(crate) struct Reply {
    text: String,
    /// Bytes of `text` already streamed.
    sent: usize,
    /// Tokens generated, the end-of-sequence token not counted.
    tokens: usize,
    max_tokens: usize,
    prompt_tokens: usize,
    stop: Vec<String>,
    /// The longest stop sequence's length: streaming holds back one byte
    /// less, which the next token may complete.
    hold: usize,
    stream: bool,
}

impl Reply {
    pub(crate) fn new(request: &ChatRequest, prompt_tokens: usize, max_tokens: usize) -> Self {
        let stop: Vec<String> = request.stop.iter().filter(|s| !s.is_empty()).cloned().collect();
        Reply {
            text: String::new(),
            sent: 0,
            tokens: 0,
            max_tokens,
            prompt_tokens,
            hold: stop.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0),
            stop,
            stream: request.stream,
        }
    }

    /// Add one generated token's text; streams what is settled and tells
    /// whether the answer ended (a stop sequence, or the token limit).
    pub(crate) fn push(&mut self, piece: &str, item: &Item) -> Option<FinishReason> {
        let before = self.text.len();
        self.text.push_str(piece);
        self.tokens += 1;
        // A stop sequence ends in the new piece: it starts at most its own
        // length before it.
        let found = self
            .stop
            .iter()
            .filter_map(|s| {
                let from = floor_boundary(&self.text, before.saturating_sub(s.len() - 1));
                self.text[from..].find(s.as_str()).map(|at| from + at)
            })
            .min();
        if let Some(cut) = found {
            self.text.truncate(cut);
            return Some(FinishReason::Stop);
        }
        if self.tokens >= self.max_tokens {
            return Some(FinishReason::Length);
        }
        self.stream_settled(item);
        None
    }

    /// Stream what is settled: not the start of a stop sequence that the
    /// next token may complete.
    fn stream_settled(&mut self, item: &Item) {
        if !self.stream {
            return;
        }
        let settled = floor_boundary(&self.text, self.text.len().saturating_sub(self.hold));
        if settled > self.sent {
            item.send(Event::Delta(self.text[self.sent..settled].to_owned()));
            self.sent = settled;
        }
    }

    /// Send the rest of the text (streaming) and the answer.
    pub(crate) fn finish(&mut self, item: &Item, finish_reason: FinishReason) {
        if self.stream && self.text.len() > self.sent {
            item.send(Event::Delta(self.text[self.sent..].to_owned()));
            self.sent = self.text.len();
        }
        item.done(Output::Chat(ChatOutput {
            text: std::mem::take(&mut self.text),
            finish_reason,
            prompt_tokens: self.prompt_tokens as u32,
            completion_tokens: self.tokens as u32,
            upstream: None,
        }));
    }

    pub(crate) fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }
}

/// A chat step's report: `live` are the replies of the sequences still
/// running, each reserving its prompt and allowed answer.
pub(crate) fn step_report<'a>(
    live: impl Iterator<Item = &'a Reply>,
    tokens: usize,
    sequences: usize,
    start: Instant,
    prefill: Duration,
) -> StepReport {
    let (running, reserved) =
        live.fold((0, 0), |(n, r), reply| (n + 1, r + reply.prompt_tokens + reply.max_tokens));
    StepReport { running, reserved, tokens, sequences, elapsed: start.elapsed(), prefill }
}

/// The largest character boundary of `text` at or before `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Bytes to text for engines whose tokens are byte pieces: a character
/// split over two tokens waits for its second half; bytes that can never
/// be UTF-8 become U+FFFD.
#[derive(Default)]
pub(crate) struct Utf8Pieces {
    pending: Vec<u8>,
}

impl Utf8Pieces {
    /// The text that `bytes` complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(error) => {
                    let valid = error.valid_up_to();
                    out.push_str(String::from_utf8_lossy(&self.pending[..valid]).as_ref());
                    match error.error_len() {
                        // Incomplete at the end: wait for more.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_split_over_tokens_wait_for_their_rest() {
        let mut pieces = Utf8Pieces::default();
        let bytes = "日本".as_bytes();
        assert_eq!(pieces.push(&bytes[..1]), "");
        assert_eq!(pieces.push(&bytes[1..4]), "日");
        assert_eq!(pieces.push(&bytes[4..]), "本");
        assert_eq!(pieces.push(b"a\xffb"), "a\u{FFFD}b");
    }

    #[test]
    fn boundaries_fall_back_to_a_character_start() {
        assert_eq!(floor_boundary("aé", 2), 1);
        assert_eq!(floor_boundary("aé", 9), 3);
        assert_eq!(floor_boundary("", 3), 0);
    }
}
