//! KServe v2 (Triton HTTP) routes with JSON tensors.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use infergate_backends::tensor::{DataType, Tensor, TensorData};
use infergate_backends::{Output, Request, Task, TensorRequest};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{dispatch_headers, encode, genai, JsonBody};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::runner::Cost;
use crate::state::SharedState;

/// `GET /v2`: server metadata.
pub async fn server_metadata() -> Json<Value> {
    Json(json!({ "name": "infergate", "version": env!("CARGO_PKG_VERSION"), "extensions": [] }))
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
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let model = state.model(&name)?;
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
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.model(&name)?;
    ready(State(state)).await
}

/// The versioned forms; every model has the single version `1`.
pub async fn model_metadata_versioned(
    state: State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    check_version(&name, &version)?;
    model_metadata(state, Path(name)).await
}

pub async fn model_ready_versioned(
    state: State<SharedState>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    check_version(&name, &version)?;
    model_ready(state, Path(name)).await
}

pub async fn infer_versioned(
    state: State<SharedState>,
    Path((name, version)): Path<(String, String)>,
    ctx: RequestContext,
    body: JsonBody<InferBody>,
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
}

#[derive(Debug, Deserialize)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<u64>,
    pub datatype: String,
    /// Row-major, flat or nested.
    pub data: Value,
}

#[derive(Debug, Deserialize)]
pub struct RequestedOutput {
    pub name: String,
}

/// Flatten nested JSON arrays into the tensor's element family.
fn decode_tensor(input: &InputTensor, index: usize, budget: &mut u64) -> Result<Tensor, ApiError> {
    let param = format!("inputs[{index}]");
    let datatype: DataType =
        input.datatype.parse().map_err(|e: String| ApiError::invalid(param.clone(), e))?;
    let count = Tensor::shape_elements(&input.shape)
        .ok_or_else(|| ApiError::invalid(param.clone(), "shape is too large"))?;
    *budget = budget.checked_sub(count).ok_or_else(|| {
        ApiError::invalid(param.clone(), "the request holds more tensor elements than allowed")
    })?;
    let mut flat = Vec::new();
    flatten(&input.data, &mut flat, 0).map_err(|e| ApiError::invalid(param.clone(), e))?;
    let data = match datatype {
        DataType::Bool => TensorData::Bool(collect(&flat, Value::as_bool, "booleans", &param)?),
        DataType::Bytes => {
            TensorData::Bytes(collect(&flat, |v| v.as_str().map(str::to_owned), "strings", &param)?)
        }
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => {
            TensorData::Float(collect(&flat, Value::as_f64, "numbers", &param)?)
        }
        _ => TensorData::Int(collect(
            &flat,
            |v| v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from)),
            "integers",
            &param,
        )?),
    };
    let tensor = Tensor { name: input.name.clone(), datatype, shape: input.shape.clone(), data };
    tensor.validate().map_err(|e| ApiError::invalid(param, e))?;
    Ok(tensor)
}

fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>, depth: usize) -> Result<(), String> {
    if depth > 32 {
        return Err("data is nested too deeply".into());
    }
    match value {
        Value::Array(items) => items.iter().try_for_each(|v| flatten(v, out, depth + 1)),
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

fn encode_tensor(t: &Tensor) -> Value {
    t.to_json()
}

/// `POST /v2/models/{model}/infer`.
pub async fn infer(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<InferBody>,
) -> Result<Response, ApiError> {
    genai("infer", &name);
    if state.model(&name)?.task == Task::Ocr {
        return infer_ocr(&state, &name, &ctx, body).await;
    }
    let model = state.model_for(&name, Task::Tensor)?;
    if body.inputs.is_empty() {
        return Err(ApiError::invalid("inputs", "at least one input tensor is required"));
    }
    let mut budget = state.config.limits.max_tensor_elements;
    let inputs = body
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| decode_tensor(t, i, &mut budget))
        .collect::<Result<Vec<_>, _>>()?;
    let elements = state.config.limits.max_tensor_elements - budget;
    let outputs = body.outputs.into_iter().map(|o| o.name).collect();
    let deadline = ctx.deadline(model.default_timeout);
    let outcome = Outcome::new(&state.metrics, &model.name, "infer", &ctx, deadline);
    let running = model
        .submit(
            &ctx,
            Request::Tensor(TensorRequest { inputs, outputs }),
            Cost::whole(elements as f64 / 1000.0, elements as usize * 8),
        )
        .await?;
    let headers = dispatch_headers(&running.dispatch);
    let Output::Tensor(out) = running.output_by(deadline).await? else {
        return Err(ApiError::Internal { detail: "tensor backend returned another task's output".into() });
    };
    outcome.answered(None);
    let mut response = json!({
        "model_name": model.name,
        "model_version": "1",
        "outputs": out.outputs.iter().map(encode_tensor).collect::<Vec<_>>(),
    });
    if let Some(id) = body.id {
        response["id"] = json!(id);
    }
    Ok(encode(|| (headers, Json(response)).into_response()))
}

/// An OCR model over KServe: input 0 is one BYTES element holding the image
/// (base64 or a data URL); outputs `text` (BYTES `[n]`), `confidence`
/// (FP32 `[n]`) and `boxes` (FP32 `[n, 4, 2]`, pixels, clockwise from top-left).
async fn infer_ocr(
    state: &SharedState,
    name: &str,
    ctx: &RequestContext,
    body: InferBody,
) -> Result<Response, ApiError> {
    let model = state.model_for(name, Task::Ocr)?;
    let [input] = &body.inputs[..] else {
        return Err(ApiError::invalid("inputs", "an OCR model takes one BYTES input holding the image"));
    };
    let element = match (&input.data, input.datatype.as_str()) {
        (Value::Array(items), "BYTES") if items.len() == 1 => items[0].as_str(),
        (Value::String(s), "BYTES") => Some(s.as_str()),
        _ => None,
    }
    .ok_or_else(|| {
        ApiError::invalid("inputs[0]", "an OCR model takes one BYTES element: the image as base64")
    })?;
    let image = crate::api::ocr::kserve_image(element)?;
    let (out, headers) = crate::api::ocr::run(state, ctx, model, image).await?;
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
    let outputs: Vec<Value> = outputs
        .iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.name.as_str()))
        .map(encode_tensor)
        .collect();
    let mut response = json!({ "model_name": model.name, "model_version": "1", "outputs": outputs });
    if let Some(id) = body.id {
        response["id"] = json!(id);
    }
    Ok(encode(|| (headers, Json(response)).into_response()))
}
