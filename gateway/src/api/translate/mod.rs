//! DeepL-compatible translation: `POST /v2/translate`, `GET|POST
//! /v2/languages` and `GET|POST /v2/usage`, so DeepL's own clients work
//! with `server_url` pointed at the gateway.
//!
//! Each `text` becomes one chat job for the model `[translation]` routes the
//! target language to (any chat model; the scheduler batches the jobs, and
//! the in-process model decodes them together), prompted with that model's
//! `translation_prompt`. Without `source_lang` the language is detected
//! (whatlang) and reported as `detected_source_language`. A text already in
//! the target language, or without letters to translate, comes back as it
//! was. Bodies are JSON or `application/x-www-form-urlencoded` (repeated
//! `text`); errors are DeepL's `{"message": …}`, and DeepL's
//! `Authorization: DeepL-Auth-Key …` is accepted beside `Bearer`.
//!
//! Accepted but without effect: `split_sentences`, `preserve_formatting`,
//! `outline_detection` and the tag lists (the model sees each text whole).
//! Refused with a 400: `tag_handling`, glossaries, style rules and
//! translation memories, which a chat model cannot honour faithfully.

pub mod languages;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{AppendHeaders, IntoResponse, Response};
use axum::Json;
use futures_util::future::try_join_all;
use http::header;
use infergate_backends::{tokens, ChatMessage, ChatRequest, Output, Task};
use infergate_otel::names::spans;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use self::languages::Language;
use crate::api::extract::{decode_json, read_body};
use crate::api::{dispatch_headers, encode, genai};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::runner::{Cost, ModelHandle};
use crate::state::SharedState;

/// The prompt a model gets when its config names none. `{source}`,
/// `{target}` and `{text}` are replaced; `{instructions}` takes the
/// formality, context and custom instructions, one sentence each.
pub const DEFAULT_PROMPT: &str = "Translate the following text from {source} to {target}.{instructions} \
Reply with the translation only, without notes or quotes.\n\n{text}";

/// The request, from JSON or a form.
#[derive(Debug, Deserialize)]
struct TranslateBody {
    #[serde(default)]
    text: Option<Texts>,
    #[serde(default)]
    target_lang: Option<String>,
    #[serde(default)]
    source_lang: Option<String>,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    formality: Option<String>,
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    show_billed_characters: Option<Value>,
    #[serde(default)]
    split_sentences: Option<Value>,
    #[serde(default)]
    preserve_formatting: Option<Value>,
    #[serde(default)]
    tag_handling: Option<String>,
    #[serde(default)]
    glossary_id: Option<String>,
    #[serde(default)]
    glossary_ids: Option<Value>,
    #[serde(default)]
    style_id: Option<String>,
    #[serde(default)]
    translation_memory_id: Option<String>,
    #[serde(default)]
    custom_instructions: Option<Texts>,
}

/// One string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Texts {
    One(String),
    Many(Vec<String>),
}

impl Texts {
    fn into_vec(self) -> Vec<String> {
        match self {
            Texts::One(t) => vec![t],
            Texts::Many(v) => v,
        }
    }
}

/// Keys that a form repeats into a list.
const LIST_KEYS: &[&str] =
    &["text", "custom_instructions", "glossary_ids", "non_splitting_tags", "splitting_tags", "ignore_tags"];

/// A form body as the JSON object DeepL's JSON API would take.
fn form_to_json(body: &[u8]) -> Value {
    let mut object = Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        if LIST_KEYS.contains(&key.as_ref()) {
            let entry = object.entry(key.into_owned()).or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                list.push(value);
            }
        } else {
            object.insert(key.into_owned(), value);
        }
    }
    Value::Object(object)
}

/// `true`, `1`, `"1"`, `"true"`.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_i64() == Some(1),
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true"),
        _ => false,
    }
}

async fn read_translate_body(request: Request, limit: u64) -> Result<TranslateBody, ApiError> {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let bytes = read_body(request.into_body(), limit).await?;
    match media.as_str() {
        "application/json" => decode_json(&bytes),
        "application/x-www-form-urlencoded" | "" => serde_json::from_value(form_to_json(&bytes))
            .map_err(|e| ApiError::bad_request(format!("Invalid form body: {e}"))),
        _ => Err(ApiError::UnsupportedMediaType {
            expected: "application/json or application/x-www-form-urlencoded",
        }),
    }
}

/// What one request asks for, checked.
struct Plan {
    texts: Vec<String>,
    target: &'static Language,
    source: Option<&'static Language>,
    instructions: String,
    billed: bool,
    model_type: Option<&'static str>,
}

fn plan(body: TranslateBody, max_texts: usize, max_chars: usize) -> Result<Plan, ApiError> {
    let refuse = |param: &str, what: &str| {
        Err(ApiError::invalid(param, format!("{what} are not supported by this server")))
    };
    if body.tag_handling.is_some() {
        return refuse("tag_handling", "Tag handling (XML/HTML)");
    }
    if body.glossary_id.is_some() || body.glossary_ids.is_some() {
        return refuse("glossary_id", "Glossaries");
    }
    if body.style_id.is_some() {
        return refuse("style_id", "Style rules");
    }
    if body.translation_memory_id.is_some() {
        return refuse("translation_memory_id", "Translation memories");
    }
    let texts = body.text.map(Texts::into_vec).unwrap_or_default();
    if texts.is_empty() {
        return Err(ApiError::invalid("text", "Parameter 'text' not specified."));
    }
    if texts.len() > max_texts {
        return Err(ApiError::invalid(
            "text",
            format!("Too many texts: {} in one request, the limit is {max_texts}.", texts.len()),
        ));
    }
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    if chars > max_chars {
        return Err(ApiError::invalid(
            "text",
            format!("The texts are {chars} characters, over the limit of {max_chars} per request."),
        ));
    }
    let target = match body.target_lang.as_deref().map(str::trim) {
        None | Some("") => {
            return Err(ApiError::invalid("target_lang", "Parameter 'target_lang' not specified."))
        }
        Some(code) => languages::target(code)
            .ok_or_else(|| ApiError::invalid("target_lang", "Value for 'target_lang' not supported."))?,
    };
    let source = match body.source_lang.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(code) => Some(
            languages::source(code)
                .ok_or_else(|| ApiError::invalid("source_lang", "Value for 'source_lang' not supported."))?,
        ),
    };
    let mut instructions = String::new();
    match body.formality.as_deref().unwrap_or("default") {
        "default" => {}
        "more" | "less" if !target.formality => {
            return Err(ApiError::invalid(
                "formality",
                "'formality' is not supported for given 'target_lang'.",
            ))
        }
        "prefer_more" | "prefer_less" if !target.formality => {}
        "more" | "prefer_more" => instructions.push_str(" Use a formal register."),
        "less" | "prefer_less" => instructions.push_str(" Use an informal register."),
        _ => return Err(ApiError::invalid("formality", "Value for 'formality' not supported.")),
    }
    if let Some(context) = body.context.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        instructions.push_str(&format!(" For context only, not to be translated: \"{context}\"."));
    }
    let custom = body.custom_instructions.map(Texts::into_vec).unwrap_or_default();
    if custom.len() > 10 || custom.iter().any(|c| c.chars().count() > 300) {
        return Err(ApiError::invalid(
            "custom_instructions",
            "At most 10 custom instructions of at most 300 characters each.",
        ));
    }
    for instruction in custom.iter().map(|c| c.trim()).filter(|c| !c.is_empty()) {
        instructions.push(' ');
        instructions.push_str(instruction);
        if !instruction.ends_with(['.', '!', '?']) {
            instructions.push('.');
        }
    }
    let model_type = match body.model_type.as_deref() {
        None => None,
        Some("quality_optimized" | "prefer_quality_optimized") => Some("quality_optimized"),
        Some("latency_optimized") => Some("latency_optimized"),
        Some(_) => return Err(ApiError::invalid("model_type", "Value for 'model_type' not supported.")),
    };
    for (param, value) in
        [("split_sentences", &body.split_sentences), ("preserve_formatting", &body.preserve_formatting)]
    {
        let ok = match value {
            None | Some(Value::Bool(_)) => true,
            Some(Value::Number(n)) => matches!(n.as_i64(), Some(0 | 1)),
            Some(Value::String(s)) => {
                matches!(s.as_str(), "0" | "1" | "true" | "false")
                    || (param == "split_sentences" && s == "nonewlines")
            }
            Some(_) => false,
        };
        if !ok {
            return Err(ApiError::invalid(param, format!("Value for '{param}' not supported.")));
        }
    }
    Ok(Plan {
        texts,
        target,
        source,
        instructions,
        billed: truthy(body.show_billed_characters.as_ref()),
        model_type,
    })
}

/// The chat model for a target language.
fn route<'s>(state: &'s SharedState, target: &Language) -> Result<&'s Arc<ModelHandle>, ApiError> {
    let t = &state.config.translation;
    let named = t
        .targets
        .iter()
        .find(|(code, _)| code.eq_ignore_ascii_case(target.code))
        .or_else(|| {
            t.targets.iter().find(|(code, _)| code.eq_ignore_ascii_case(languages::base(target.code)))
        })
        .map(|(_, model)| model)
        .or(t.model.as_ref());
    match named {
        Some(name) => state.model_for(name, Task::Chat),
        None => state
            .default_model(Task::Chat)
            .ok_or_else(|| ApiError::ModelNotFound { model: "(no chat model serves translation)".into() }),
    }
}

/// The prompt for one text.
fn prompt(
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

/// `POST /v2/translate`.
pub async fn translate(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    let t = &state.config.translation;
    let plan = async {
        let body = read_translate_body(request, state.config.server.max_body_bytes).await?;
        plan(body, t.max_texts, t.max_chars)
    }
    .instrument(tracing::info_span!(spans::DECODE))
    .await?;
    let model = route(&state, plan.target)?.clone();
    genai("translation", &model.name);
    let template = state
        .config
        .models
        .iter()
        .find(|m| m.name == model.name)
        .and_then(|m| m.translation_prompt.as_deref())
        .unwrap_or(DEFAULT_PROMPT);
    let deadline = ctx.deadline(model.default_timeout);
    let outcome = Outcome::new(&model.genai, "translation", &ctx, deadline);
    let jobs = plan.texts.iter().map(|text| {
        let source = plan.source.or_else(|| languages::detect(text));
        let model = model.clone();
        let ctx = &ctx;
        let plan = &plan;
        async move {
            let detected = source.map_or("EN", |l| l.code);
            let same = source.is_some_and(|s| s.code == languages::base(plan.target.code));
            if same || !text.chars().any(char::is_alphabetic) {
                return Ok::<_, ApiError>((detected, text.clone(), (0, 0), None));
            }
            let content = prompt(template, source, plan.target, &plan.instructions, text);
            let input = tokens::estimate(&content);
            let max_tokens = t.max_output_tokens.min(tokens::estimate(text).saturating_mul(3) + 32);
            let request = ChatRequest {
                messages: vec![ChatMessage { role: "user".into(), content }],
                max_tokens,
                temperature: 0.0,
                top_p: 1.0,
                top_k: None,
                seed: Some(0),
                stop: Vec::new(),
                stream: false,
                passthrough: None,
            };
            let cost = Cost::whole(f64::from(input + max_tokens.min(tokens::estimate(text) * 2)), text.len());
            let running = model.submit(ctx, infergate_backends::Request::Chat(request), cost).await?;
            let dispatch = running.dispatch;
            let Output::Chat(chat) = running.output_by(deadline).await? else {
                return Err(ApiError::Internal {
                    detail: "chat backend returned another task's output".into(),
                });
            };
            model.observe_output(chat.completion_tokens);
            let usage = (chat.prompt_tokens, chat.completion_tokens);
            Ok((detected, clean(&chat.text, text), usage, Some(dispatch)))
        }
    });
    let results = try_join_all(jobs).await?;
    let (input, output) = results.iter().fold((0, 0), |(i, o), (_, _, (a, b), _)| (i + a, o + b));
    // The headers of the largest batch a text joined.
    let headers =
        results.iter().filter_map(|r| r.3).max_by_key(|d| d.batch_size).map(|d| dispatch_headers(&d));
    outcome.answered(Some((input, output)));
    tracing::Span::current()
        .record("gen_ai.usage.input_tokens", input)
        .record("gen_ai.usage.output_tokens", output);
    let billed: u64 = plan.texts.iter().map(|t| t.chars().count() as u64).sum();
    state.count_translated(&ctx.tenant, billed);
    let translations: Vec<Value> = results
        .into_iter()
        .zip(&plan.texts)
        .map(|((detected, text, _, _), original)| {
            let mut entry = json!({ "detected_source_language": detected, "text": text });
            if plan.billed {
                entry["billed_characters"] = json!(original.chars().count());
            }
            if let Some(used) = plan.model_type {
                entry["model_type_used"] = json!(used);
            }
            entry
        })
        .collect();
    Ok(encode(|| {
        (AppendHeaders(headers.into_iter().flatten()), Json(json!({ "translations": translations })))
            .into_response()
    }))
}

/// `GET|POST /v2/languages`, `type=source|target` in the query or a form
/// body (DeepL's Python client sends a form body even with GET).
pub async fn languages(State(state): State<SharedState>, request: Request) -> Result<Response, ApiError> {
    let query = request.uri().query().unwrap_or("").as_bytes().to_vec();
    let body = read_body(request.into_body(), state.config.server.max_body_bytes).await?;
    let kind = form_urlencoded::parse(&query)
        .chain(form_urlencoded::parse(&body))
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.into_owned());
    let list: Vec<Value> = match kind.as_deref() {
        None | Some("source") => {
            languages::SOURCES.iter().map(|l| json!({ "language": l.code, "name": l.name })).collect()
        }
        Some("target") => languages::targets()
            .map(|l| json!({ "language": l.code, "name": l.name, "supports_formality": l.formality }))
            .collect(),
        Some(_) => return Err(ApiError::invalid("type", "Value for 'type' not supported.")),
    };
    Ok(Json(list).into_response())
}

/// `GET|POST /v2/usage`: characters translated for the caller's tenant since
/// the process started; there is no quota.
pub async fn usage(State(state): State<SharedState>, ctx: RequestContext) -> Response {
    let count = state.translated(&ctx.tenant);
    Json(json!({ "character_count": count, "character_limit": 1_000_000_000_000u64 })).into_response()
}

#[cfg(test)]
mod tests;
