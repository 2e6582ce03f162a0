//! KServe v2 (Triton HTTP) routes, with JSON tensors or Triton's binary
//! tensor data extension ([`crate::api::kserve_binary`]).

use axum::extract::{FromRequest, Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::StatusCode;
use infergate_backends::tensor::{DataType, Tensor, TensorData, TensorError};
use infergate_backends::{Task, TensorRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::api::extract::{decode_json, dispatch_headers, encode, read_body, require_content_type};
use crate::api::kserve_binary::{self as binary, HEADER_LENGTH};
use crate::api::ocr::kserve_image;
use crate::call::{Call, Image, Operation, Tensors};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::state::SharedState;

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "infergate",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// `GET /v2/health/live`.
pub async fn live() -> StatusCode {
    StatusCode::OK
}

/// `GET /v2/health/ready`: 200 when ready, else 503 with the reason.
pub async fn ready(State(state): State<SharedState>) -> Result<StatusCode, ApiError> {
    match state.readiness.reason() {
        None => Ok(StatusCode::OK),
        Some(reason) => Err(ApiError::NotReady { reason }),
    }
}

/// `GET /v2/models/{model}`: model metadata.
pub async fn model_metadata(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = state.model_of(&ctx, &name)?;
    Ok(Json(json!({
        "name": model.name,
        "versions": ["1"],
        "platform": model.info.platform,
        "inputs": [],
        "outputs": [],
    })))
}

/// `GET /v2/models/{model}/ready`.
pub async fn model_ready(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.model_of(&ctx, &name)?;
    ready(State(state)).await
}

/// The versioned forms; every model has the single version `1`.
pub async fn model_metadata_versioned(
    state: State<SharedState>,
    ctx: RequestContext,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&name, &version)?;
    model_metadata(state, ctx, Path(name)).await
}

pub async fn model_ready_versioned(
    state: State<SharedState>,
    ctx: RequestContext,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_version(&name, &version)?;
    model_ready(state, ctx, Path(name)).await
}

pub async fn infer_versioned(
    state: State<SharedState>,
    Path((name, version)): Path<(String, String)>,
    ctx: RequestContext,
    body: InferPayload,
) -> Result<Response, ApiError> {
    check_version(&name, &version)?;
    infer(state, Path(name), ctx, body).await
}

fn check_version(name: &str, version: &str) -> Result<(), ApiError> {
    if version == "1" {
        Ok(())
    } else {
        Err(ApiError::ModelNotFound { model: format!("{name} version {version}") })
    }
}

/// An inference request.
#[derive(Debug, Deserialize)]
pub struct InferBody {
    #[serde(default)]
    pub id: Option<String>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
    #[serde(default)]
    pub parameters: Parameters,
}

/// The `parameters` of a request, an input or an output that infergate reads.
#[derive(Debug, Default, Deserialize)]
pub struct Parameters {
    /// Input: this many bytes of the binary section are this tensor's data.
    #[serde(default)]
    pub binary_data_size: Option<u64>,
    /// Output: send this tensor's data in binary.
    #[serde(default)]
    pub binary_data: Option<bool>,
    /// Request: send every output's data in binary.
    #[serde(default)]
    pub binary_data_output: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    /// Row-major, flat or nested; absent when the data is binary.
    #[serde(default)]
    pub data: Option<Value>,
    #[serde(default)]
    pub parameters: Parameters,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
    #[serde(default)]
    pub parameters: Parameters,
}

/// An inference request's JSON and, with the binary extension, each input's
/// raw bytes (same order as `inputs`).
#[derive(Debug)]
pub struct InferPayload {
    pub body: InferBody,
    pub binary: Vec<Option<Bytes>>,
}

impl FromRequest<SharedState> for InferPayload {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &SharedState) -> Result<Self, ApiError> {
        let span = tracing::info_span!(infergate_otel::names::spans::DECODE, bytes = tracing::field::Empty);
        async {
            let header_length = match request.headers().get(HEADER_LENGTH) {
                None => None,
                Some(v) => {
                    Some(v.to_str().ok().and_then(|v| v.trim().parse::<usize>().ok()).ok_or_else(|| {
                        ApiError::invalid(
                            HEADER_LENGTH,
                            "Inference-Header-Content-Length must be the JSON header's length in bytes",
                        )
                    })?)
                }
            };
            if header_length.is_none() {
                require_content_type(&request, "application/json")?;
            }
            let bytes = read_body(request.into_body(), state.config.server.max_body_bytes).await?;
            tracing::Span::current().record("bytes", bytes.len());
            let Some(length) = header_length else {
                return Ok(InferPayload {
                    body: decode_json(&bytes, state.config.limits.max_json_depth)?,
                    binary: Vec::new(),
                });
            };
            if length > bytes.len() {
                return Err(ApiError::invalid(
                    HEADER_LENGTH,
                    format!(
                        "Inference-Header-Content-Length is {length} but the body has {} bytes",
                        bytes.len()
                    ),
                ));
            }
            let body: InferBody = decode_json(&bytes[..length], state.config.limits.max_json_depth)?;
            let sizes: Vec<Option<u64>> = body.inputs.iter().map(|i| i.parameters.binary_data_size).collect();
            let binary = binary::split_inputs(&sizes, bytes.slice(length..))
                .map_err(|e| ApiError::invalid("inputs", e.to_string()))?;
            Ok(InferPayload { body, binary })
        }
        .instrument(span)
        .await
    }
}

impl InferPayload {
    /// Input `index`'s raw bytes, when it came in binary.
    fn raw(&self, index: usize) -> Option<&Bytes> {
        self.binary.get(index).and_then(Option::as_ref)
    }
}

/// Flatten nested JSON arrays into the tensor's element family.
fn decode_tensor(
    input: &InputTensor,
    raw: Option<&Bytes>,
    index: usize,
    budget: &mut u64,
) -> Result<Tensor, ApiError> {
    let param = format!("inputs[{index}]");
    let datatype: DataType =
        input.datatype.parse().map_err(|e: TensorError| ApiError::invalid(param.clone(), e.to_string()))?;
    let count = Tensor::shape_elements(&input.shape)
        .ok_or_else(|| ApiError::invalid(param.clone(), "shape is too large"))?;
    *budget = budget.checked_sub(count).ok_or_else(|| {
        ApiError::invalid(param.clone(), "the request holds more tensor elements than allowed")
    })?;
    let data = match (raw, &input.data) {
        (Some(raw), None) => binary::decode(datatype, count, raw)
            .map_err(|e| ApiError::invalid(param.clone(), e.to_string()))?,
        (None, Some(data)) => decode_json_data(data, datatype, &param)?,
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(param, "has both data and binary_data_size; send one"));
        }
        (None, None) => return Err(ApiError::invalid(param, "needs data (or binary_data_size)")),
    };
    let tensor = Tensor { name: input.name.clone(), datatype, shape: input.shape.clone(), data };
    tensor.validate().map_err(|e| ApiError::invalid(param, e.to_string()))?;
    Ok(tensor)
}

fn decode_json_data(data: &Value, datatype: DataType, param: &str) -> Result<TensorData, ApiError> {
    let mut flat = Vec::new();
    flatten(data, &mut flat, 0, param)?;
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(collect(&flat, Value::as_bool, "booleans", param)?),
        DataType::Bytes => {
            TensorData::Bytes(collect(&flat, |v| v.as_str().map(str::to_owned), "strings", param)?)
        }
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
            TensorData::Float(collect(&flat, Value::as_f64, "numbers", param)?)
        }
        _ => TensorData::Int(collect(
            &flat,
            |v| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from)),
            "integers",
            param,
        )?),
    })
}

fn flatten<'a>(
    value: &'a Value,
    out: &mut Vec<&'a Value>,
    depth: usize,
    param: &str,
) -> Result<(), ApiError> {
    if depth > 32 {
        return Err(ApiError::invalid(param, "data is nested too deeply"));
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, depth + 1, param)),
        other => {
            out.push(other);
            Ok(())
        }
    }
}

fn collect<T>(
    flat: &[&Value],
    get: impl Fn(&Value) -> Option<T>,
    what: &str,
    param: &str,
) -> Result<Vec<T>, ApiError> {
    flat.iter()
        .map(|v| get(v))
        .collect::<Option<Vec<T>>>()
        .ok_or_else(|| ApiError::invalid(param, format!("data must hold {what} for this datatype")))
}

/// The response: JSON, or with outputs asked for in binary, the JSON
/// header followed by their bytes.
fn respond(
    mut response: Value,
    outputs: &[&Tensor],
    body: &InferBody,
    headers: crate::api::extract::DispatchHeaders,
) -> Response {
    let all_binary = body.parameters.binary_data_output.unwrap_or(false);
    let mut blobs = Vec::new();
    let encoded: Vec<Value> = outputs
        .iter()
        .map(|t| {
            let asked = body.outputs.iter().find(|o| o.name == t.name).and_then(|o| o.parameters.binary_data);
            if asked.unwrap_or(all_binary) {
                let raw = binary::encode(t.datatype, &t.data);
                let entry = json!({
                    "name": t.name,
                    "datatype": t.datatype.as_str(),
                    "shape": t.shape,
                    "parameters": { "binary_data_size": raw.len() },
                });
                blobs.push(raw);
                entry
            } else {
                t.to_json()
            }
        })
        .collect();
    response["outputs"] = Value::Array(encoded);
    if let Some(id) = &body.id {
        response["id"] = json!(id);
    }
    if blobs.is_empty() {
        return encode(|| (headers, Json(response)).into_response());
    }
    encode(|| {
        let header = serde_json::to_vec(&response).unwrap_or_default();
        let mut out = Vec::with_capacity(header.len() + blobs.iter().map(Bytes::len).sum::<usize>());
        out.extend_from_slice(&header);
        blobs.iter().for_each(|b| out.extend_from_slice(b));
        (
            headers,
            [
                (http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/octet-stream")),
                (http::HeaderName::from_static(HEADER_LENGTH), http::HeaderValue::from(header.len())),
            ],
            out,
        )
            .into_response()
    })
}

/// `POST /v2/models/{model}/infer`.
pub async fn infer(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    ctx: RequestContext,
    payload: InferPayload,
) -> Result<Response, ApiError> {
    // The model's task decides how the tensors are read.
    let ocr = state.model(&name).map(|m| m.task == Task::Ocr).unwrap_or(false);
    if ocr {
        return infer_ocr(&state, &name, ctx, payload).await;
    }
    let call = Call::open(&state, ctx, Some(&name), Task::Tensor, Operation::Infer).await?;
    let body = &payload.body;
    if body.inputs.is_empty() {
        return Err(ApiError::invalid("inputs", "at least one input tensor is required"));
    }
    let mut budget = state.config.limits.max_tensor_elements;
    let inputs = body
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| decode_tensor(t, payload.raw(i), i, &mut budget))
        .collect::<Result<Vec<_>, _>>()?;
    let elements = state.config.limits.max_tensor_elements - budget;
    let outputs = body.outputs.iter().map(|o| o.name.clone()).collect();
    let answer = call.once(Tensors { request: TensorRequest { inputs, outputs }, elements }).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let response = json!({ "model_name": call.model().name, "model_version": "1" });
    Ok(respond(response, &answer.output.outputs.iter().collect::<Vec<_>>(), body, headers))
}

/// An OCR model over KServe: input 0 is one BYTES element holding the image
/// (base64 or a data URL in JSON; the file's bytes in binary); outputs `text` (BYTES `[n]`), `confidence`
/// (FP32 `[n]`) and `boxes` (FP32 `[n, 4, 2]`, pixels, clockwise from top-left).
async fn infer_ocr(
    state: &SharedState,
    name: &str,
    ctx: RequestContext,
    payload: InferPayload,
) -> Result<Response, ApiError> {
    let call = Call::open(state, ctx, Some(name), Task::Ocr, Operation::InferOcr).await?;
    let body = &payload.body;
    let [input] = &body.inputs[..] else {
        return Err(ApiError::invalid("inputs", "an OCR model takes one BYTES input holding the image"));
    };
    let one_element =
        || ApiError::invalid("inputs[0]", "an OCR model takes one BYTES element: the image (base64 in JSON)");
    if input.datatype != "BYTES" {
        return Err(one_element());
    }
    let image = match (payload.raw(0), &input.data) {
        (Some(raw), None) => {
            let element =
                binary::bytes_elements(raw, 1).map_err(|e| ApiError::invalid("inputs[0]", e.to_string()))?[0];
            raw.slice_ref(element)
        }
        (None, Some(Value::Array(items))) if items.len() == 1 => {
            kserve_image(items[0].as_str().ok_or_else(one_element)?)?
        }
        (None, Some(Value::String(s))) => kserve_image(s)?,
        _ => return Err(one_element()),
    };
    let answer = call.once(Image(image)).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let out = answer.output;
    let n = out.lines.len() as u64;
    let outputs = [
        Tensor {
            name: "text".into(),
            datatype: DataType::Bytes,
            shape: vec![n],
            data: TensorData::Bytes(out.lines.iter().map(|l| l.text.clone()).collect()),
        },
        Tensor {
            name: "confidence".into(),
            datatype: DataType::Fp32,
            shape: vec![n],
            data: TensorData::Float(out.lines.iter().map(|l| f64::from(l.confidence)).collect()),
        },
        Tensor {
            name: "boxes".into(),
            datatype: DataType::Fp32,
            shape: vec![n, 4, 2],
            data: TensorData::Float(
                out.lines.iter().flat_map(|l| l.corners.iter().flatten().map(|&v| f64::from(v))).collect(),
            ),
        },
    ];
    let wanted: Vec<&str> = body.outputs.iter().map(|o| o.name.as_str()).collect();
    if let Some(unknown) = wanted.iter().find(|w| !outputs.iter().any(|t| t.name == **w)) {
        return Err(ApiError::invalid(
            "outputs",
            format!("unknown output '{unknown}': this model has text, confidence, boxes"),
        ));
    }
    let outputs: Vec<&Tensor> =
        outputs.iter().filter(|t| wanted.is_empty() || wanted.contains(&t.name.as_str())).collect();
    let response = json!({ "model_name": call.model().name, "model_version": "1" });
    Ok(respond(response, &outputs, body, headers))
}

/// The fuzz target's way in (`fuzz/`): the request read (JSON, or the JSON
/// header and binary tensors) and every input decoded, as `infer` does.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn fuzz(request: axum::extract::Request, state: &SharedState) -> Result<(), ApiError> {
    let payload = InferPayload::from_request(request, state).await?;
    let mut budget = state.config.limits.max_tensor_elements;
    for (i, input) in payload.body.inputs.iter().enumerate() {
        decode_tensor(input, payload.raw(i), i, &mut budget)?;
    }
    Ok(())
}
