//! `POST /v1/embeddings`: float or base64 vectors.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use infergate_backends::{tokens, EmbeddingInput, EmbeddingsRequest, Task};
use serde::{Deserialize, Serialize};

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
    /// token-id arrays; decoded straight into those (never a JSON tree, which
    /// costs ~40 bytes per token id).
    pub input: Input,
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

/// `input` as it came.
#[derive(Debug)]
pub enum Input {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl<'de> Deserialize<'de> for Input {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(InputVisitor)
    }
}

struct InputVisitor;

impl<'de> serde::de::Visitor<'de> for InputVisitor {
    type Value = Input;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string, an array of strings, an array of token ids, or an array of token-id arrays")
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Input, E> {
        Ok(Input::Text(text.to_owned()))
    }

    fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Input, E> {
        Ok(Input::Text(text))
    }

    /// The first entry decides what the others must be.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Input, A::Error> {
        let hint = seq.size_hint().unwrap_or(0).min(4096);
        match seq.next_element::<First>()? {
            None => Err(serde::de::Error::invalid_length(0, &INPUT_SHAPE)),
            Some(First::Text(text)) => {
                let mut texts = Vec::with_capacity(hint);
                texts.push(text);
                while let Some(text) = seq.next_element::<String>()? {
                    texts.push(text);
                }
                Ok(Input::Texts(texts))
            }
            Some(First::Token(id)) => {
                let mut ids = Vec::with_capacity(hint);
                ids.push(id);
                while let Some(TokenId(id)) = seq.next_element()? {
                    ids.push(id);
                }
                Ok(Input::Tokens(ids))
            }
            Some(First::List(ids)) => {
                let mut lists = Vec::with_capacity(hint);
                lists.push(ids);
                while let Some(TokenIds(ids)) = seq.next_element()? {
                    lists.push(ids);
                }
                Ok(Input::TokenLists(lists))
            }
        }
    }
}

/// The first entry of an `input` array.
enum First {
    Text(String),
    Token(u32),
    List(Vec<u32>),
}

impl<'de> Deserialize<'de> for First {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = First;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a token id or an array of token ids")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<First, E> {
                Ok(First::Text(text.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, text: String) -> Result<First, E> {
                Ok(First::Text(text))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<First, E> {
                token(n).map(First::Token)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<First, E> {
                token(u64::try_from(n).map_err(|_| E::custom(TOKEN_ID))?).map(First::Token)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<First, E> {
                Err(E::custom(TOKEN_ID))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<First, A::Error> {
                TokenIds::from_seq(seq).map(|ids| First::List(ids.0))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

const TOKEN_ID: &str = "token ids must be non-negative integers below 2^32";

fn token<E: serde::de::Error>(n: u64) -> Result<u32, E> {
    u32::try_from(n).map_err(|_| E::custom(TOKEN_ID))
}

/// One token id.
struct TokenId(u32);

impl<'de> Deserialize<'de> for TokenId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = TokenId;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a token id (a non-negative integer)")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<TokenId, E> {
                token(n).map(TokenId)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<TokenId, E> {
                token(u64::try_from(n).map_err(|_| E::custom(TOKEN_ID))?).map(TokenId)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// An array of token ids.
struct TokenIds(Vec<u32>);

impl TokenIds {
    fn from_seq<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<TokenIds, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(65_536));
        while let Some(TokenId(id)) = seq.next_element()? {
            ids.push(id);
        }
        Ok(TokenIds(ids))
    }
}

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TokenIds;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of token ids")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<TokenIds, A::Error> {
                TokenIds::from_seq(seq)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

fn parse_inputs(input: Input, limits: &Limits) -> Result<Vec<EmbeddingInput>, ApiError> {
    let count = match &input {
        Input::Text(_) | Input::Tokens(_) => 1,
        Input::Texts(texts) => texts.len(),
        Input::TokenLists(lists) => lists.len(),
    };
    if count > limits.max_inputs {
        return Err(ApiError::invalid(
            "input",
            format!("'input' has more than {} entries", limits.max_inputs),
        ));
    }
    match input {
        Input::Text(text) => Ok(vec![text_input(text, "input", limits)?]),
        Input::Tokens(ids) => Ok(vec![token_input(ids, "input", limits)?]),
        Input::Texts(texts) => texts
            .into_iter()
            .enumerate()
            .map(|(i, text)| text_input(text, &format!("input[{i}]"), limits))
            .collect(),
        Input::TokenLists(lists) => lists
            .into_iter()
            .enumerate()
            .map(|(i, ids)| token_input(ids, &format!("input[{i}]"), limits))
            .collect(),
    }
}

fn text_input(text: String, param: &str, limits: &Limits) -> Result<EmbeddingInput, ApiError> {
    if text.is_empty() {
        return Err(ApiError::invalid(param, format!("'{param}' must not be empty")));
    }
    let estimate = tokens::estimate(&text);
    if estimate > limits.max_input_tokens {
        return Err(ApiError::invalid(
            param,
            format!("'{param}' is about {estimate} tokens, over the limit of {}", limits.max_input_tokens),
        ));
    }
    Ok(EmbeddingInput::Text(text))
}

fn token_input(ids: Vec<u32>, param: &str, limits: &Limits) -> Result<EmbeddingInput, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid(param, format!("'{param}' must not be empty")));
    }
    if ids.len() > limits.max_input_tokens as usize {
        return Err(ApiError::invalid(
            param,
            format!("'{param}' has more than {} tokens", limits.max_input_tokens),
        ));
    }
    Ok(EmbeddingInput::Tokens(ids))
}

/// Handle an embeddings request.
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<EmbeddingsBody>,
) -> Result<Response, ApiError> {
    let call = Call::open(&state, ctx, Some(&body.model), Task::Embeddings, Operation::Embeddings).await?;
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
    let inputs = parse_inputs(body.input, &state.config.limits)?;
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
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn fuzz(body: &[u8], limits: &Limits) -> Result<(), ApiError> {
    let body: EmbeddingsBody = crate::api::extract::decode_json(body, limits.max_json_depth)?;
    parse_inputs(body.input, limits).map(drop)
}
