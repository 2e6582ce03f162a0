//! `POST /v1/embeddings`: float or base64 vectors.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use infergate_backends::{tokens, EmbeddingInput, EmbeddingsRequest, Task};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::extract::{dispatch_headers, encode, JsonBody};
use crate::call::{Call, Operation};
use crate::config::Limits;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

/// The request body as OpenAI documents it.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsBody {
    pub model: String,
    /// A string, an array of strings, an array of token ids, or an array of
    /// token-id arrays; decoded by hand for precise errors.
    pub input: Value,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<i64>,
}

/// OpenAI's response shape, serialised directly: vectors are the bulk of the
/// bytes, and building a `serde_json::Value` per float costs more than the
/// rest of the request.
#[derive(Debug, Serialize)]
struct EmbeddingList<'a> {
    object: &'static str,
    data: Vec<EmbeddingObject<'a>>,
    model: &'a str,
    usage: EmbeddingUsage,
}

#[derive(Debug, Serialize)]
struct EmbeddingObject<'a> {
    object: &'static str,
    index: usize,
    embedding: Vector<'a>,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Vector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Debug, Serialize)]
struct EmbeddingUsage {
    prompt_tokens: u32,
    total_tokens: u32,
}

/// How vectors are written back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Float,
    /// Little-endian f32 bytes, base64-encoded (what the OpenAI SDKs ask for).
    Base64,
}

const INPUT_SHAPE: &str =
    "'input' must be a non-empty string, an array of strings, an array of token ids, or an array of token-id arrays";

fn parse_inputs(input: &Value, limits: &Limits) -> Result<Vec<EmbeddingInput>, ApiError> {
    let inputs = match input {
        Value::String(s) => vec![text_input(s, "input", limits)?],
        Value::Array(items) if items.is_empty() => return Err(ApiError::invalid("input", INPUT_SHAPE)),
        Value::Array(items) if items.iter().all(Value::is_string) => items
            .iter()
            .enumerate()
            .map(|(i, v)| text_input(v.as_str().unwrap_or_default(), &format!("input[{i}]"), limits))
            .collect::<Result<_, _>>()?,
        Value::Array(items) if items.iter().all(Value::is_number) => {
            vec![token_input(items, "input", limits)?]
        }
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                token_input(
                    v.as_array().map(Vec::as_slice).unwrap_or_default(),
                    &format!("input[{i}]"),
                    limits,
                )
            })
            .collect::<Result<_, _>>()?,
        _ => return Err(ApiError::invalid("input", INPUT_SHAPE)),
    };
    if inputs.len() > limits.max_inputs {
        return Err(ApiError::invalid(
            "input",
            format!("'input' has more than {} entries", limits.max_inputs),
        ));
    }
    Ok(inputs)
}

fn text_input(text: &str, param: &str, limits: &Limits) -> Result<EmbeddingInput, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(param, format!("'{param}' must not be empty")));
    }
    let estimate = tokens::estimate(text);
    if estimate > limits.max_input_tokens {
        return Err(ApiError::invalid(
            param,
            format!("'{param}' is about {estimate} tokens, over the limit of {}", limits.max_input_tokens),
        ));
    }
    Ok(EmbeddingInput::Text(text.to_owned()))
}

fn token_input(items: &[Value], param: &str, limits: &Limits) -> Result<EmbeddingInput, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid(param, format!("'{param}' must not be empty")));
    }
    if items.len() > limits.max_input_tokens as usize {
        return Err(ApiError::invalid(
            param,
            format!("'{param}' has more than {} tokens", limits.max_input_tokens),
        ));
    }
    let ids = items
        .iter()
        .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| {
            ApiError::invalid(param, format!("'{param}' must hold non-negative integer token ids"))
        })?;
    Ok(EmbeddingInput::Tokens(ids))
}

/// Handle an embeddings request.
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<EmbeddingsBody>,
) -> Result<Response, ApiError> {
    let call = Call::open(&state, ctx, Some(&body.model), Task::Embeddings, Operation::Embeddings)?;
    let encoding = match body.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!("'encoding_format' must be float or base64, got '{other}'"),
            ))
        }
    };
    let dimensions = body
        .dimensions
        .map(|d| {
            u32::try_from(d).ok().filter(|d| *d >= 1).ok_or_else(|| {
                ApiError::invalid("dimensions", format!("'dimensions' must be a positive integer, got {d}"))
            })
        })
        .transpose()?;
    let inputs = parse_inputs(&body.input, &state.config.limits)?;
    let answer = call.once(EmbeddingsRequest { inputs, dimensions }).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let out = answer.output;
    let data = out
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| EmbeddingObject {
            object: "embedding",
            index,
            embedding: match encoding {
                Encoding::Float => Vector::Float(v),
                Encoding::Base64 => {
                    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                    Vector::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
            },
        })
        .collect();
    let usage = EmbeddingUsage { prompt_tokens: out.prompt_tokens, total_tokens: out.prompt_tokens };
    let body = EmbeddingList { object: "list", data, model: &body.model, usage };
    Ok(encode(|| (headers, Json(body)).into_response()))
}

/// The fuzz target's way in (`fuzz/`): a body decoded and its inputs read.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz(body: &[u8], limits: &Limits) -> Result<(), ApiError> {
    let body: EmbeddingsBody = crate::api::extract::decode_json(body)?;
    parse_inputs(&body.input, limits).map(drop)
}
