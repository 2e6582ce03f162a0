//! Translation: each sentence of each text (DeepL's `split_sentences`, see
//! [`sentences`]) becomes one chat job for the model `[translation]` routes
//! the target language to (any chat model; the scheduler batches the jobs,
//! and the in-process model decodes them together), prompted with that
//! model's `translation_prompt`; the translations are joined with the
//! source's separators. Without a source language it is detected (whatlang).
//! A text already in the target language, or a piece without letters to
//! translate, comes back as it was, without a job. The characters of every
//! text count toward the tenant's usage.

pub mod languages;
pub mod sentences;

use futures_util::future::try_join_all;
use infergate_backends::{tokens, ChatMessage, ChatRequest, Task};

use self::languages::Language;
use self::sentences::Split;
use super::chat::Chat;
use super::payload::{Payload, Usage};
use super::request::{finish, Call, Operation};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::DispatchInfo;
use crate::state::SharedState;

/// The prompt a model gets when its config names none. `{source}`,
/// `{target}` and `{text}` are replaced; `{instructions}` takes the
/// formality, context and custom instructions, one sentence each.
pub const DEFAULT_PROMPT: &str = "Translate the following text from {source} to {target}.{instructions} \
Reply with the translation only, without notes or quotes.\n\n{text}";

/// What to translate, checked.
#[derive(Debug)]
pub struct Translation {
    pub texts: Vec<String>,
    pub target: &'static Language,
    /// `None`: detect each text's language.
    pub source: Option<&'static Language>,
    /// Sentences the prompt's `{instructions}` takes.
    pub instructions: String,
    /// Where texts are cut into jobs.
    pub split: Split,
}

/// The most jobs one request's texts are cut into (each text gets its share,
/// at least 4): neighbouring sentences share a job past it, so a text of
/// thousands of tiny sentences cannot fill the model's queue.
const MAX_PIECES: usize = 128;

/// One text's translation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translated {
    /// The source language's code, given or detected (`EN` when unknown).
    pub detected: &'static str,
    pub text: String,
    /// Characters of the original text: what the tenant is billed.
    pub billed: usize,
}

/// Every text's translation, in order, and the largest batch a text joined.
#[derive(Debug)]
pub struct Translations {
    pub texts: Vec<Translated>,
    pub dispatch: Option<DispatchInfo>,
}

/// One text's job and what came of it.
struct Job {
    translated: Translated,
    usage: Usage,
    dispatch: Option<DispatchInfo>,
}

/// Translate every text; see the module docs.
pub async fn translate(
    state: &SharedState,
    ctx: RequestContext,
    translation: Translation,
) -> Result<Translations, ApiError> {
    let call =
        Call::open(state, ctx, route(state, translation.target), Task::Chat, Operation::Translation).await?;
    let template = state
        .config
        .model(&call.model().name)
        .and_then(|m| m.translation_prompt.as_deref())
        .unwrap_or(DEFAULT_PROMPT);
    let mut outcome = call.outcome();
    let jobs = translation.texts.iter().map(|text| one(&call, template, &translation, text));
    let jobs = try_join_all(jobs).await?;
    if call.keeps_content() {
        let clipped = |text: &str| crate::feedback::clip(text).to_owned();
        let input: Vec<String> = translation.texts.iter().map(|t| clipped(t)).collect();
        let output: Vec<String> = jobs.iter().map(|j| clipped(&j.translated.text)).collect();
        outcome.keep(serde_json::json!({ "input": input, "output": output }));
    }
    let (input, output) = jobs.iter().map(|j| j.usage.tokens()).fold((0, 0), |(i, o), (a, b)| (i + a, o + b));
    call.settle_cache();
    finish(outcome, Some(Usage { input, output: Some(output) }));
    let billed: usize = jobs.iter().map(|j| j.translated.billed).sum();
    state.count_translated(&call.ctx().tenant, billed as u64);
    call.ticket().charge(crate::tenancy::Meter::Characters, billed as f64);
    let dispatch = jobs.iter().filter_map(|j| j.dispatch).max_by_key(|d| d.batch_size).map(|d| {
        // What the cache made of the request's texts, all of them together.
        DispatchInfo { cache: call.cache_status(), ..d }
    });
    Ok(Translations { texts: jobs.into_iter().map(|j| j.translated).collect(), dispatch })
}

/// One text: as it was, or translated by the model a sentence at a time.
async fn one(call: &Call, template: &str, translation: &Translation, text: &str) -> Result<Job, ApiError> {
    let source = translation.source.or_else(|| languages::detect(text));
    let detected = source.map_or("EN", |l| l.code);
    let billed = text.chars().count();
    let same = source.is_some_and(|s| s.code == languages::base(translation.target.code));
    if same || !text.chars().any(char::is_alphabetic) {
        let translated = Translated { detected, text: text.to_owned(), billed };
        return Ok(Job { translated, usage: Usage::default(), dispatch: None });
    }
    let share = (MAX_PIECES / translation.texts.len().max(1)).max(4);
    let cut = sentences::cut(text, translation.split, detected == "DE", share);
    let pieces = cut.pieces.iter().map(|p| piece(call, template, translation, source, p.core));
    let pieces = try_join_all(pieces).await?;
    // Chinese and Japanese put no space between sentences.
    let unspaced = matches!(languages::base(translation.target.code), "ZH" | "JA");
    let mut out = String::with_capacity(text.len());
    let (mut input, mut output) = (0, 0);
    let mut dispatch: Option<DispatchInfo> = None;
    for (n, (p, (translated, usage, d))) in cut.pieces.iter().zip(pieces).enumerate() {
        if !(unspaced && n > 0 && !p.lead.contains('\n')) {
            out.push_str(p.lead);
        }
        out.push_str(&translated);
        let (i, o) = usage.tokens();
        (input, output) = (input + i, output + o);
        dispatch = dispatch.into_iter().chain(d).max_by_key(|d| d.batch_size);
    }
    out.push_str(cut.tail);
    // A translation of a source language the detector was unsure of, when
    // the model did translate it (not from the cache).
    if translation.source.is_none() && call.model().capture.is_some() && output > 0 {
        let sure = languages::confidence(text);
        call.capture(
            sure,
            "translation_source_uncertain",
            serde_json::json!({ "input": text, "output": &out }),
        );
    }
    let usage = Usage { input, output: Some(output) };
    Ok(Job { translated: Translated { detected, text: out, billed }, usage, dispatch })
}

/// One piece's translation, its usage and its batch; a piece without letters
/// stays as it is, without a job.
async fn piece(
    call: &Call,
    template: &str,
    translation: &Translation,
    source: Option<&Language>,
    text: &str,
) -> Result<(String, Usage, Option<DispatchInfo>), ApiError> {
    if !text.chars().any(char::is_alphabetic) {
        return Ok((text.to_owned(), Usage::default(), None));
    }
    let content = prompt(template, source, translation.target, &translation.instructions, text);
    let input = tokens::estimate(&content);
    let limit = call.state().config.translation.max_output_tokens;
    let max_tokens = limit.min(tokens::estimate(text).saturating_mul(3) + 32);
    let request = ChatRequest {
        messages: vec![ChatMessage { role: "user".into(), content }],
        max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        top_k: None,
        seed: Some(0),
        stop: Vec::new(),
        stream: false,
        json: false,
        passthrough: None,
    };
    // Priced by the text's own length rather than the model's recent answers.
    let expected = max_tokens.min(tokens::estimate(text) * 2);
    let chat = Chat { request, prompt_tokens: input, bytes: text.len(), expected_output: Some(expected) };
    let answer = call.run(chat).await?;
    // A cached answer's tokens are not this request's.
    let usage =
        if answer.served { Usage::default() } else { Chat::usage(&answer.output).unwrap_or_default() };
    Ok((clean(&answer.output.text, text), usage, Some(answer.dispatch)))
}

/// The chat model `[translation]` names for a target language; `None`: the
/// first chat model.
fn route<'s>(state: &'s SharedState, target: &Language) -> Option<&'s str> {
    let t = &state.config.translation;
    t.targets
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(target.code))
        .or_else(|| {
            t.targets.iter().find(|(code, _)| code.eq_ignore_ascii_case(languages::base(target.code)))
        })
        .map(|(_, model)| model)
        .or(t.model.as_ref())
        .map(String::as_str)
}

/// The prompt for one text.
pub fn prompt(
    template: &str,
    source: Option<&Language>,
    target: &Language,
    instructions: &str,
    text: &str,
) -> String {
    let source = source.map_or("its language", |l| l.name);
    template
        .replace("{source}", source)
        .replace("{target}", target.name)
        .replace("{instructions}", instructions)
        .replace("{text}", text)
}

/// A model's answer without the wrapping small models like to add.
fn clean(answer: &str, original: &str) -> String {
    let mut text = answer.trim();
    for (open, close) in [('"', '"'), ('“', '”'), ('«', '»'), ('„', '“')] {
        let quoted = text.len() > 1 && text.starts_with(open) && text.ends_with(close);
        if quoted && !original.trim().starts_with(open) {
            text = text[open.len_utf8()..text.len() - close.len_utf8()].trim();
        }
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_lose_the_quotes_the_model_added() {
        assert_eq!(clean("  \"Guten Morgen\"\n", "Good morning"), "Guten Morgen");
        assert_eq!(clean("„Hallo“", "Hello"), "Hallo");
        assert_eq!(clean("\"quoted\"", "\"quoted\""), "\"quoted\"");
        assert_eq!(clean("\"", "x"), "\"");
    }
}
