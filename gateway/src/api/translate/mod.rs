//! DeepL-compatible translation: `POST /v2/translate`, `GET|POST
//! /v2/languages` and `GET|POST /v2/usage`, so DeepL's own clients work
//! with `server_url` pointed at the gateway.
//!
//! Each `text` is translated by the call layer ([`crate::call::translate`]:
//! one chat job per text for the model `[translation]` routes the target
//! language to). Without `source_lang` the language is detected and
//! reported as `detected_source_language`. Bodies are JSON or
//! `application/x-www-form-urlencoded` (repeated `text`); errors are
//! DeepL's `{"message": …}`, and DeepL's `Authorization: DeepL-Auth-Key …`
//! is accepted beside `Bearer`.
//!
//! `split_sentences` (`1`, the default: at punctuation and newlines;
//! `nonewlines`; `0`: whole) decides where texts are cut into jobs.
//! Accepted but without effect: `preserve_formatting`, `outline_detection`
//! and the tag lists.
//! Refused with a 400: `tag_handling`, glossaries, style rules and
//! translation memories, which a chat model cannot honour faithfully.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header;
use infergate_otel::names::spans;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::api::extract::{decode_json, dispatch_headers, encode, read_body};
use crate::call::translate::languages::{self, Language};
use crate::call::translate::sentences::Split;
use crate::call::translate::{translate as translate_texts, Translation};
use crate::config::TranslationSection;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

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

async fn read_translate_body(
    request: Request,
    limit: u64,
    max_depth: usize,
) -> Result<TranslateBody, ApiError> {
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
        "application/json" => decode_json(&bytes, max_depth),
        "application/x-www-form-urlencoded" | "" => {
            serde_json::from_value(form_to_json(&bytes)).map_err(|e| {
                ApiError::bad_request(format!(
                    "Invalid form body: {}",
                    crate::api::extract::plain(&e.to_string())
                ))
            })
        }
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
    split: Split,
    billed: bool,
    model_type: Option<&'static str>,
}

fn plan(body: TranslateBody, t: &TranslationSection) -> Result<Plan, ApiError> {
    let (max_texts, max_chars) = (t.max_texts, t.max_chars);
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
            .filter(|l| t.offers(l.code))
            .ok_or_else(|| ApiError::invalid("target_lang", "Value for 'target_lang' not supported."))?,
    };
    let source = match body.source_lang.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(code) => Some(
            languages::source(code)
                .filter(|l| t.offers(l.code))
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
    let split = match &body.split_sentences {
        Some(Value::Bool(false)) => Split::Off,
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Split::Off,
        Some(Value::String(s)) if matches!(s.as_str(), "0" | "false") => Split::Off,
        Some(Value::String(s)) if s == "nonewlines" => Split::Punctuation,
        _ => Split::PunctuationAndNewlines,
    };
    Ok(Plan {
        texts,
        target,
        source,
        instructions,
        split,
        billed: truthy(body.show_billed_characters.as_ref()),
        model_type,
    })
}

/// `POST /v2/translate`.
pub async fn translate(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    let t = &state.config.translation;
    let plan = async {
        let body = read_translate_body(
            request,
            state.config.server.max_body_bytes,
            state.config.limits.max_json_depth,
        )
        .await?;
        plan(body, t)
    }
    .instrument(tracing::info_span!(spans::DECODE))
    .await?;
    let job = Translation {
        texts: plan.texts,
        target: plan.target,
        source: plan.source,
        instructions: plan.instructions,
        split: plan.split,
    };
    let done = translate_texts(&state, ctx, job).await?;
    // The headers of the largest batch a text joined.
    let headers = done.dispatch.map(|d| dispatch_headers(&d));
    let translations: Vec<Value> = done
        .texts
        .into_iter()
        .map(|translated| {
            let mut entry =
                json!({ "detected_source_language": translated.detected, "text": translated.text });
            if plan.billed {
                entry["billed_characters"] = json!(translated.billed);
            }
            if let Some(used) = plan.model_type {
                entry["model_type_used"] = json!(used);
            }
            entry
        })
        .collect();
    Ok(encode(|| (headers, Json(json!({ "translations": translations }))).into_response()))
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
    let offered = |l: &Language| state.config.translation.offers(l.code);
    let list: Vec<Value> = match kind.as_deref() {
        None | Some("source") => languages::SOURCES
            .iter()
            .filter(|l| offered(l))
            .map(|l| json!({ "language": l.code, "name": l.name }))
            .collect(),
        Some("target") => languages::targets()
            .filter(|l| offered(l))
            .map(|l| json!({ "language": l.code, "name": l.name, "supports_formality": l.formality }))
            .collect(),
        Some(_) => return Err(ApiError::invalid("type", "Value for 'type' not supported.")),
    };
    Ok(Json(list).into_response())
}

/// `GET|POST /v2/usage`: with a `characters_per_month` limit, the
/// tenant's characters this month (UTC) and the limit, from the limit store
/// (shared by every replica); without one, the characters translated here
/// since the process started, and no limit to speak of.
pub async fn usage(State(state): State<SharedState>, ctx: RequestContext) -> Result<Response, ApiError> {
    let monthly = ctx.policy.as_ref().and_then(|p| p.characters_per_month.clone());
    let (count, limit) = match monthly {
        Some(limit) => {
            let used = state.store.read(&limit).await.map_err(|_| ApiError::StoreUnavailable)?;
            (used.round() as u64, limit.amount as u64)
        }
        None => (state.translated(&ctx.tenant), 1_000_000_000_000u64),
    };
    Ok(Json(json!({ "character_count": count, "character_limit": limit })).into_response())
}

#[cfg(test)]
mod tests;
