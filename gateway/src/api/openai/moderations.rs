//! `POST /v1/moderations`: text, and images in OpenAI's multi-modal shape.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use infergate_backends::{ModerationInput, ModerationRequest, Task};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::extract::{dispatch_headers, encode, JsonBody};
use crate::call::{Call, Operation};
use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

/// The request body as OpenAI documents it; `model` defaults to the first
/// moderation model in config.
#[derive(Debug, Deserialize)]
pub struct ModerationBody {
    pub input: Value,
    #[serde(default)]
    pub model: Option<String>,
}

const INPUT_SHAPE: &str =
    "'input' must be a string, an array of strings, or an array of {type: text|image_url} objects";

fn parse_groups(input: &Value, limits: &Limits) -> Result<Vec<Vec<ModerationInput>>, ApiError> {
    let groups = match input {
        Value::String(s) => vec![vec![ModerationInput::Text(s.clone())]],
        Value::Array(items) if items.is_empty() => return Err(ApiError::invalid("input", INPUT_SHAPE)),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .map(|v| vec![ModerationInput::Text(v.as_str().unwrap_or_default().to_owned())])
            .collect(),
        Value::Array(items) if items.iter().all(Value::is_object) => {
            vec![items.iter().enumerate().map(|(i, v)| part(v, i)).collect::<Result<Vec<_>, _>>()?]
        }
        _ => return Err(ApiError::invalid("input", INPUT_SHAPE)),
    };
    let count: usize = groups.iter().map(Vec::len).sum();
    if count > limits.max_inputs {
        return Err(ApiError::invalid(
            "input",
            format!("'input' has more than {} entries", limits.max_inputs),
        ));
    }
    Ok(groups)
}

/// One multi-modal part: `{"type":"text","text":…}` or
/// `{"type":"image_url","image_url":{"url":"data:image/…;base64,…"}}`.
fn part(value: &Value, index: usize) -> Result<ModerationInput, ApiError> {
    let param = format!("input[{index}]");
    match value.get("type").and_then(Value::as_str) {
        Some("text") => value
            .get("text")
            .and_then(Value::as_str)
            .map(|t| ModerationInput::Text(t.to_owned()))
            .ok_or_else(|| ApiError::invalid(param, "a text part needs a string 'text'")),
        Some("image_url") => {
            let url = value
                .pointer("/image_url/url")
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(param.clone(), "an image_url part needs 'image_url.url'"))?;
            check_data_url(url, &param)?;
            Ok(ModerationInput::ImageUrl(url.to_owned()))
        }
        Some(other) => {
            Err(ApiError::invalid(param, format!("input parts of type '{other}' cannot be moderated")))
        }
        None => Err(ApiError::invalid(param, "each input part needs a 'type'")),
    }
}

/// Only inline images are accepted: fetching URLs on a client's behalf
/// would let any caller make the gateway reach into its own network.
fn check_data_url(url: &str, param: &str) -> Result<(), ApiError> {
    let rest = url.strip_prefix("data:").ok_or_else(|| {
        ApiError::invalid(param, "images must be sent inline as data:image/...;base64,... URLs")
    })?;
    let (meta, data) = rest.split_once(',').ok_or_else(|| ApiError::invalid(param, "malformed data URL"))?;
    if !meta.starts_with("image/") || !meta.ends_with(";base64") {
        return Err(ApiError::invalid(
            param,
            "data URLs must be base64-encoded images (data:image/png;base64,...)",
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| ApiError::invalid(param, "the data URL is not valid base64"))?;
    Ok(())
}

/// Handle a moderation request.
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<ModerationBody>,
) -> Result<Response, ApiError> {
    let call =
        Call::open(&state, ctx, body.model.as_deref(), Task::Moderation, Operation::Moderation).await?;
    let groups = parse_groups(&body.input, &state.config.limits)?;
    let answer = call.once(ModerationRequest { groups }).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let results: Vec<Value> = answer
        .output
        .results
        .iter()
        .map(|r| {
            json!({
                "flagged": r.flagged,
                "categories": r.categories,
                "category_scores": r.category_scores,
                "category_applied_input_types": r.category_applied_input_types,
            })
        })
        .collect();
    let body = json!({ "id": call.ctx().object_id("modr"), "model": call.model().name, "results": results });
    Ok(encode(|| (headers, Json(body)).into_response()))
}

/// The fuzz target's way in (`fuzz/`): a body decoded and its inputs read.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz(body: &[u8], limits: &Limits) -> Result<(), ApiError> {
    let body: ModerationBody = crate::api::extract::decode_json(body, limits.max_json_depth)?;
    parse_groups(&body.input, limits).map(drop)
}
