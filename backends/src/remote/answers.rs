//! Reading upstream answers: whole JSON answers of each API (chat,
//! embeddings, transcripts, tensors) and streamed chat answers, relayed
//! chunk by chunk.

use bytes::Bytes;
use serde_json::Value;

use super::transport as http;
use crate::{
    BackendError, ChatOutput, Chunk, EmbeddingsOutput, Event, FinishReason, Item, Output, UpstreamAnswer,
};

/// A whole answer's bytes.
pub(super) async fn whole_body(response: http::Response) -> Result<Bytes, BackendError> {
    http::read_all(response)
        .await
        .map_err(|e| BackendError::Disconnected(format!("upstream response broke off: {e}")))
}

/// A whole JSON answer.
pub(super) async fn json_body(response: http::Response) -> Result<Value, BackendError> {
    serde_json::from_slice(&whole_body(response).await?)
        .map_err(|e| BackendError::Failed(format!("upstream answer is not JSON: {e}")))
}

fn finish_reason(value: &Value) -> FinishReason {
    match value.as_str() {
        Some("length") => FinishReason::Length,
        Some("tool_calls" | "function_call") => FinishReason::ToolCalls,
        Some("content_filter") => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn usage(value: &Value) -> (u32, u32) {
    (count(&value["prompt_tokens"]), count(&value["completion_tokens"]))
}

/// A token count; 0 when it is not a whole number.
fn count(value: &Value) -> u32 {
    value.as_u64().map_or(0, |v| u32::try_from(v).unwrap_or(u32::MAX))
}

/// A chat answer: what infergate reads from it (text, finish reason,
/// usage) and the whole body as sent, which the client gets.
pub(super) async fn chat_json(response: http::Response) -> Result<Option<Output>, BackendError> {
    chat_answer(whole_body(response).await?).map(Some)
}

/// See [`chat_json`]. Members not named here are skipped unread.
pub(crate) fn chat_answer(bytes: Bytes) -> Result<Output, BackendError> {
    #[derive(serde::Deserialize)]
    struct Choice {
        #[serde(default)]
        message: Message,
        #[serde(default)]
        finish_reason: Value,
    }
    #[derive(Default, serde::Deserialize)]
    struct Message {
        #[serde(default)]
        content: Value,
    }
    /// The two counts read as values (a number allocates nothing), so a
    /// count that is not a whole number reads 0 as it did from a whole
    /// `Value`; other members are skipped.
    #[derive(Default, serde::Deserialize)]
    struct Usage {
        #[serde(default)]
        prompt_tokens: Value,
        #[serde(default)]
        completion_tokens: Value,
    }
    let not_chat = |e: &dyn std::fmt::Display| {
        BackendError::Failed(format!("upstream chat answer is not a JSON object with choices: {e}"))
    };
    // One pass over the answer finds its members; of their values only the
    // choices and the usage are read again, and the `model` value's place is
    // kept for the gateway's rename.
    let members = crate::json_object::members(&bytes).map_err(|e| not_chat(&e))?;
    let (mut choices, mut usage_raw, mut model_at, mut models) = (None, None, None, 0);
    for (key, raw) in &members {
        match key.as_ref() {
            "choices" => choices = Some(*raw),
            "usage" => usage_raw = Some(*raw),
            "model" => {
                models += 1;
                model_at = Some(crate::json_object::value_range(&bytes, raw));
            }
            _ => {}
        }
    }
    let choices: Vec<Choice> =
        serde_json::from_str(choices.ok_or_else(|| not_chat(&"missing field `choices`"))?)
            .map_err(|e| not_chat(&e))?;
    // Usage that is not an object counts nothing, as it did before.
    // (serde would read an array's items as the fields in order.)
    let usage: Usage = usage_raw
        .filter(|raw| raw.starts_with('{'))
        .and_then(|raw| serde_json::from_str(raw).ok())
        .unwrap_or_default();
    let (prompt_tokens, completion_tokens) = (count(&usage.prompt_tokens), count(&usage.completion_tokens));
    let choice = choices.into_iter().next();
    Ok(Output::Chat(ChatOutput {
        text: choice.as_ref().and_then(|c| c.message.content.as_str()).unwrap_or_default().to_owned(),
        finish_reason: choice.map_or(FinishReason::Stop, |c| finish_reason(&c.finish_reason)),
        prompt_tokens,
        completion_tokens,
        upstream: Some(UpstreamAnswer { model_at: model_at.filter(|_| models == 1), body: bytes }),
    }))
}

pub(super) async fn embeddings_json(response: http::Response) -> Result<Option<Output>, BackendError> {
    let body = json_body(response).await?;
    let mut data: Vec<&Value> = body["data"].as_array().map(|a| a.iter().collect()).unwrap_or_default();
    data.sort_by_key(|d| d["index"].as_u64().unwrap_or(0));
    let vectors = data
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .map(|v| v.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32).collect::<Vec<f32>>())
                .ok_or_else(|| BackendError::Failed("upstream embedding is not a float array".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Output::Embeddings(EmbeddingsOutput { vectors, prompt_tokens: usage(&body["usage"]).0 })))
}

/// OpenAI's `verbose_json` transcript; segment times shifted by `offset`
/// (this chunk's place in the whole recording).
pub(super) async fn transcription_json(
    response: http::Response,
    offset: f64,
) -> Result<Option<Output>, BackendError> {
    let body = json_body(response).await?;
    let segments = body["segments"]
        .as_array()
        .map(|list| {
            list.iter()
                .enumerate()
                .map(|(i, s)| crate::Segment {
                    id: s["id"].as_u64().map_or(i as u32, |id| id as u32),
                    start: offset + s["start"].as_f64().unwrap_or(0.0),
                    end: offset + s["end"].as_f64().unwrap_or(0.0),
                    text: s["text"].as_str().unwrap_or_default().to_owned(),
                    avg_logprob: s["avg_logprob"].as_f64(),
                    no_speech_prob: s["no_speech_prob"].as_f64(),
                })
                .collect()
        })
        .unwrap_or_default();
    // verbose_json's segments carry avg_logprob and no_speech_prob (OpenAI,
    // vLLM): the same confidence as infergate's own whisper.cpp gives.
    let confidence = body["segments"].as_array().and_then(|list| {
        list.iter()
            .filter_map(|s| {
                let sure = s["avg_logprob"].as_f64()?.exp();
                let speech = 1.0 - s["no_speech_prob"].as_f64().unwrap_or(0.0);
                Some(sure.min(speech).clamp(0.0, 1.0))
            })
            .reduce(f64::min)
    });
    Ok(Some(Output::Transcription(crate::TranscriptionOutput {
        text: body["text"].as_str().unwrap_or_default().trim().to_owned(),
        language: language_code(body["language"].as_str().unwrap_or_default()),
        duration: body["duration"].as_f64().unwrap_or(0.0),
        segments,
        confidence,
    })))
}

/// OpenAI names the language ("english"), vLLM and infergate's own models
/// give its code ("en"); clients get the code from every backend.
fn language_code(language: &str) -> String {
    // whisper-rs panics on a NUL byte; an upstream could send one.
    let known = |l: &str| !l.is_empty() && !l.contains('\0');
    Some(language.to_lowercase())
        .filter(|l| known(l))
        .and_then(|l| whisper_rs::get_lang_id(&l))
        .and_then(whisper_rs::get_lang_str)
        .unwrap_or(language)
        .to_owned()
}

pub(super) async fn tensor_json(response: http::Response) -> Result<Option<Output>, BackendError> {
    let body = json_body(response).await?;
    let outputs = body["outputs"]
        .as_array()
        .ok_or_else(|| BackendError::Failed("upstream KServe answer has no outputs".into()))?
        .iter()
        .map(crate::tensor::Tensor::from_json)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BackendError::Failed(format!("upstream KServe answer: {e}")))?;
    Ok(Some(Output::Tensor(crate::TensorOutput { outputs })))
}

/// What infergate reads from a streamed chunk; the rest is skipped unread.
#[derive(serde::Deserialize)]
struct StreamChunk {
    #[serde(default)]
    error: Option<StreamError>,
    #[serde(default)]
    model: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    choices: Option<Vec<StreamChoice>>,
}

#[derive(serde::Deserialize)]
struct StreamError {
    #[serde(default)]
    message: Value,
}

#[derive(serde::Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    finish_reason: Value,
}

impl StreamChunk {
    /// Whether it carries anything beyond the assistant role: the first
    /// such chunk is the stream's first token.
    fn substantive(&self) -> bool {
        let Some(choices) = self.choices.as_ref().filter(|c| !c.is_empty()) else { return true };
        choices.iter().any(|choice| {
            !choice.finish_reason.is_null()
                || choice.delta.as_ref().is_some_and(|delta| {
                    delta.iter().any(|(key, value)| match value {
                        Value::Null => false,
                        Value::String(s) => key != "role" && !s.is_empty(),
                        _ => true,
                    })
                })
        })
    }
}

/// Relay an upstream SSE stream chunk by chunk, as the upstream wrote each;
/// the output (text, finish reason, usage) when it ends well. Chunks that
/// only announce the role wait for the first token, so that the first event
/// is the first token.
pub(super) async fn relay_stream(
    item: &Item,
    response: http::Response,
) -> Result<Option<Output>, BackendError> {
    let mut stream = response.into_body();
    let mut relay = Relay::new();
    let mut send = |chunk| item.send(Event::Chunk(chunk));
    while !relay.done {
        let chunk = tokio::select! {
            chunk = http::next_chunk(&mut stream) => chunk,
            () = item.cancel.cancelled() => return Err(BackendError::Cancelled),
        };
        match chunk {
            Some(Ok(bytes)) => relay.feed(&bytes, &mut send)?,
            Some(Err(e)) => {
                return Err(BackendError::Disconnected(format!("upstream stream broke off: {e}")))
            }
            None => return Err(BackendError::Disconnected("upstream stream ended without [DONE]".into())),
        }
    }
    Ok(Some(relay.finish(&mut send)))
}

/// The SSE parser of [`relay_stream`], apart from its I/O: the body goes in
/// piece by piece as it arrives ([`Relay::feed`]), chunks to relay come out
/// through `send`, and [`Relay::finish`] gives the output after `[DONE]`.
pub(crate) struct Relay {
    /// Bytes after the last complete line.
    buffer: Vec<u8>,
    text: String,
    finish: FinishReason,
    tokens: (u32, u32),
    deltas: u32,
    /// Chunks that only announce the role, until the first token.
    held: Option<Vec<Chunk>>,
    /// `data: [DONE]` came; what follows is not read.
    pub(crate) done: bool,
}

impl Relay {
    pub(crate) fn new() -> Relay {
        Relay {
            buffer: Vec::new(),
            text: String::new(),
            finish: FinishReason::Stop,
            tokens: (0, 0),
            deltas: 0,
            held: Some(Vec::new()),
            done: false,
        }
    }

    /// Take the next piece of the body: every complete line in it is read;
    /// an upstream `error` event fails the stream.
    pub(crate) fn feed(&mut self, bytes: &[u8], send: &mut impl FnMut(Chunk)) -> Result<(), BackendError> {
        self.buffer.extend_from_slice(bytes);
        while let Some(end) = self.buffer.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:").map(str::trim) else { continue };
            if data == "[DONE]" {
                self.done = true;
                break;
            }
            self.event(data, send)?;
        }
        Ok(())
    }

    /// One `data:` line's JSON; lines that are not a chunk are skipped.
    fn event(&mut self, data: &str, send: &mut impl FnMut(Chunk)) -> Result<(), BackendError> {
        let Ok(event) = serde_json::from_str::<StreamChunk>(data) else { return Ok(()) };
        if let Some(message) = event.error.as_ref().and_then(|e| e.message.as_str()) {
            return Err(BackendError::Failed(format!("upstream: {message}")));
        }
        if let Some(counts) = event.usage.as_ref().filter(|u| u.is_object()) {
            self.tokens = usage(counts);
        }
        if let Some(choice) = event.choices.as_ref().and_then(|c| c.first()) {
            let piece = choice.delta.as_ref().and_then(|d| d.get("content")).and_then(Value::as_str);
            if let Some(piece) = piece.filter(|p| !p.is_empty()) {
                self.text.push_str(piece);
                self.deltas += 1;
            }
            if !choice.finish_reason.is_null() {
                self.finish = finish_reason(&choice.finish_reason);
            }
        }
        let chunk = Chunk {
            json: data.to_owned(),
            has_model: event.model.is_some(),
            has_usage: event.usage.is_some(),
            no_choices: event.choices.as_ref().is_some_and(Vec::is_empty),
        };
        match &mut self.held {
            Some(waiting) if !event.substantive() => waiting.push(chunk),
            Some(_) => {
                self.held.take().into_iter().flatten().for_each(&mut *send);
                send(chunk);
            }
            None => send(chunk),
        }
        Ok(())
    }

    /// The output once the stream ended; chunks still held are sent first.
    pub(crate) fn finish(self, send: &mut impl FnMut(Chunk)) -> Output {
        self.held.into_iter().flatten().for_each(&mut *send);
        let completion_tokens = if self.tokens.1 > 0 { self.tokens.1 } else { self.deltas };
        Output::Chat(ChatOutput {
            text: self.text,
            finish_reason: self.finish,
            prompt_tokens: self.tokens.0,
            completion_tokens,
            upstream: None,
        })
    }
}

/// The relayed chunks' JSON and the output of a stream fed in `pieces`
/// (for the tests and the fuzz target that cut streams anywhere).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn relay_pieces(pieces: &[&[u8]]) -> (Vec<String>, Result<Option<Output>, String>) {
    let mut chunks = Vec::new();
    let mut send = |chunk: Chunk| chunks.push(chunk.json);
    let mut relay = Relay::new();
    for piece in pieces {
        if relay.done {
            break;
        }
        if let Err(e) = relay.feed(piece, &mut send) {
            return (chunks, Err(e.to_string()));
        }
    }
    let output = relay.done.then(|| relay.finish(&mut send));
    (chunks, Ok(output))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn chat(body: &str) -> Result<ChatOutput, BackendError> {
        match chat_answer(Bytes::from(body.to_owned()))? {
            Output::Chat(chat) => Ok(chat),
            _ => unreachable!("a chat answer reads as chat"),
        }
    }

    #[test]
    fn chat_answers_give_text_reason_usage_and_the_models_place() {
        let body = r#"{"id":"x","model":"up/b","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"length"}],"usage":{"prompt_tokens":6,"completion_tokens":4,"total_tokens":10}}"#;
        let out = chat(body).unwrap();
        assert_eq!((out.text.as_str(), out.finish_reason), ("Hi", FinishReason::Length));
        assert_eq!((out.prompt_tokens, out.completion_tokens), (6, 4));
        let upstream = out.upstream.unwrap();
        assert_eq!(&upstream.body[upstream.model_at.unwrap()], br#""up/b""#);
        // Counts that are not whole numbers, or usage that is not an object, count nothing.
        for usage in [r#"{"prompt_tokens":1.5,"completion_tokens":"4"}"#, r#""many""#, "null", "[1]"] {
            let body = format!(r#"{{"choices":[],"usage":{usage}}}"#);
            let out = chat(&body).unwrap();
            assert_eq!((out.prompt_tokens, out.completion_tokens), (0, 0), "{usage}");
        }
        // No content (a tool call) is empty text; a duplicated model has no one place.
        let out = chat(r#"{"model":"a","model":"b","choices":[{"message":{"content":null}}]}"#).unwrap();
        assert_eq!((out.text.as_str(), out.finish_reason), ("", FinishReason::Stop));
        assert_eq!(out.upstream.unwrap().model_at, None);
    }

    #[test]
    fn what_is_not_a_chat_answer_fails_clearly() {
        for body in
            ["", "[]", r#"{"id":"x"}"#, r#"{"choices":{}}"#, r#"{"choices":[]"#, "{\"choices\":[\"\u{1}\"]}"]
        {
            let error = chat(body).map(|_| ()).unwrap_err().to_string();
            assert!(error.contains("not a JSON object with choices"), "{body}: {error}");
        }
    }

    #[test]
    fn upstream_language_names_become_codes() {
        assert_eq!(language_code("english"), "en");
        assert_eq!(language_code("German"), "de");
        assert_eq!(language_code("de"), "de");
        assert_eq!(language_code("klingon"), "klingon");
        assert_eq!(language_code("e\0n"), "e\0n");
        assert_eq!(language_code(""), "");
    }

    fn substantive(chunk: &Value) -> bool {
        serde_json::from_value::<StreamChunk>(chunk.clone()).unwrap().substantive()
    }

    #[test]
    fn the_first_token_is_the_first_chunk_beyond_the_role() {
        let role = json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]});
        assert!(!substantive(&role));
        let token = json!({"choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": null}]});
        assert!(substantive(&token));
        let call = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}, "finish_reason": null}]});
        assert!(substantive(&call));
        let reasoning =
            json!({"choices": [{"index": 0, "delta": {"reasoning_content": "So"}, "finish_reason": null}]});
        assert!(substantive(&reasoning));
        let end = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        assert!(substantive(&end));
        assert!(substantive(&json!({"choices": [], "usage": {"prompt_tokens": 1}})));
    }

    /// The relayed chunks' JSON and the chat output of a stream fed in `pieces`.
    fn relay(pieces: &[&[u8]]) -> (Vec<String>, Result<Option<ChatOutput>, String>) {
        let (chunks, output) = relay_pieces(pieces);
        let chat = |output: Output| match output {
            Output::Chat(chat) => chat,
            _ => unreachable!("a relay ends in a chat output"),
        };
        (chunks, output.map(|o| o.map(chat)))
    }

    #[test]
    fn a_relayed_stream_reads_the_same_however_its_body_is_cut() {
        let stream = concat!(
            "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            ": keep-alive\r\n",
            "data: {\"model\":\"up\",\"choices\":[{\"delta\":{\"content\":\"Hé\"}}]}\r\n",
            "data:{\"choices\":[{\"delta\":{\"content\":\"llo\"},\"finish_reason\":\"length\"}]}\n",
            "data: not json\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":5}}\n",
            "data: [DONE]\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"after the end\"}}]}\n",
        )
        .as_bytes();
        let (chunks, output) = relay(&[stream]);
        let output = output.unwrap().expect("the stream ended with [DONE]");
        assert_eq!(chunks.len(), 4, "{chunks:?}");
        assert!(chunks[0].contains("role"), "the role chunk first, held until the first token");
        assert_eq!((output.text.as_str(), output.finish_reason), ("Héllo", FinishReason::Length));
        assert_eq!((output.prompt_tokens, output.completion_tokens), (3, 5));
        // Cut inside "é" (a UTF-8 pair), inside `data:`, at every line end.
        let e = stream.iter().position(|&b| b == 0xC3).unwrap();
        for cut in [1, 3, e, e + 1, stream.len() / 2] {
            let (head, tail) = stream.split_at(cut);
            let (cut_chunks, cut_output) = relay(&[head, tail]);
            assert_eq!(cut_chunks, chunks, "cut at {cut}");
            assert_eq!(cut_output.unwrap().map(|o| o.text), Some(output.text.clone()), "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(relay(&bytes).0, chunks, "a byte at a time");
    }

    #[test]
    fn an_upstream_error_event_fails_the_relay_and_a_stream_without_done_is_not_finished() {
        let (chunks, output) = relay(&[b"data: {\"error\":{\"message\":\"overloaded\"}}\n"]);
        assert!(chunks.is_empty());
        assert!(output.unwrap_err().contains("upstream: overloaded"));
        assert_eq!(relay(&[b"data: {\"choices\":[]}\n"]).1.unwrap().map(|o| o.text), None);
    }
}
