//! `POST /v1/ocr`: the text lines of an image, with confidence and box.
//!
//! The image comes as JSON (`{"model": …, "image": "data:image/png;base64,…"}`
//! or bare base64), as multipart (`file`, optional `model`), or as the raw
//! body (`Content-Type: image/png|jpeg|webp`, `?model=` optional). Its size
//! is read from the header and checked against `limits.max_image_pixels`
//! before it is queued; the backend decodes it.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header;
use infergate_backends::onnx::images;
use infergate_backends::{OcrOutput, OcrRequest, Output, Task};
use infergate_otel::names::spans;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::api::extract::{decode_json, read_body};
use crate::api::{dispatch_headers, encode, genai};
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::outcome::Outcome;
use crate::runner::Cost;
use crate::runner::ModelHandle;
use crate::state::SharedState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OcrBody {
    #[serde(default)]
    model: Option<String>,
    image: String,
}

/// The image and the model it names, from any of the three body forms.
async fn read_image(request: Request, state: &SharedState) -> Result<(Bytes, Option<String>), ApiError> {
    let media = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let query_model = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("model=")))
        .map(str::to_owned);
    let limit = state.config.server.max_body_bytes;
    match media.as_str() {
        "application/json" => {
            let body: OcrBody = decode_json(&read_body(request.into_body(), limit).await?)?;
            let image =
                images::bytes_from_url(&body.image).map_err(|e| ApiError::invalid("image", e.to_string()))?;
            Ok((Bytes::from(image), body.model.or(query_model)))
        }
        "multipart/form-data" => {
            let mut form = Multipart::from_request(request, state)
                .await
                .map_err(|e| ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text())))?;
            let (mut file, mut model) = (None, query_model);
            let field_error = |e: axum::extract::multipart::MultipartError| {
                if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge { limit }
                } else {
                    ApiError::bad_request(format!("Invalid multipart body: {}", e.body_text()))
                }
            };
            while let Some(field) = form.next_field().await.map_err(field_error)? {
                match field.name().unwrap_or_default() {
                    "file" | "image" => file = Some(field.bytes().await.map_err(field_error)?),
                    "model" => model = Some(field.text().await.map_err(field_error)?),
                    other => return Err(ApiError::invalid(other, format!("unknown form field '{other}'"))),
                }
            }
            let file = file
                .ok_or_else(|| ApiError::invalid("file", "the form needs a 'file' field with the image"))?;
            Ok((file, model))
        }
        "image/png" | "image/jpeg" | "image/webp" | "application/octet-stream" => {
            Ok((read_body(request.into_body(), limit).await?, query_model))
        }
        _ => Err(ApiError::UnsupportedMediaType {
            expected: "application/json, multipart/form-data, or image/png|jpeg|webp",
        }),
    }
}

fn model<'a>(
    state: &'a SharedState,
    name: Option<&str>,
) -> Result<&'a std::sync::Arc<ModelHandle>, ApiError> {
    match name {
        Some(name) => state.model_for(name, Task::Ocr),
        None => state
            .default_model(Task::Ocr)
            .ok_or_else(|| ApiError::ModelNotFound { model: "(default OCR model)".into() }),
    }
}

/// The image's size from its header, within `limits.max_image_pixels`.
pub fn check_image(image: &[u8], state: &SharedState, param: &str) -> Result<(u32, u32), ApiError> {
    let (width, height) = images::dimensions(image).map_err(|e| ApiError::invalid(param, e.to_string()))?;
    let pixels = u64::from(width) * u64::from(height);
    let limit = state.config.limits.max_image_pixels;
    if pixels > limit {
        return Err(ApiError::invalid(
            param,
            format!("image is {width}x{height} = {pixels} pixels; the limit is {limit}"),
        ));
    }
    Ok((width, height))
}

/// Run one image through an OCR model.
pub async fn run(
    state: &SharedState,
    ctx: &RequestContext,
    model: &ModelHandle,
    image: Bytes,
) -> Result<(OcrOutput, [(http::HeaderName, http::HeaderValue); 2]), ApiError> {
    let (width, height) = check_image(&image, state, "image")?;
    let megapixels = f64::from(width) * f64::from(height) / 1e6;
    let deadline = ctx.deadline(model.default_timeout);
    let outcome = Outcome::new(&model.genai, "ocr", ctx, deadline);
    let bytes = image.len();
    let running = model
        .submit(ctx, infergate_backends::Request::Ocr(OcrRequest { image }), Cost::whole(megapixels, bytes))
        .await?;
    let headers = dispatch_headers(&running.dispatch);
    let Output::Ocr(out) = running.output_by(deadline).await? else {
        return Err(ApiError::Internal { detail: "OCR backend returned another task's output".into() });
    };
    outcome.answered(None);
    Ok((out, headers))
}

/// `POST /v1/ocr`.
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    let (image, name) = read_image(request, &state).instrument(tracing::info_span!(spans::DECODE)).await?;
    let model = model(&state, name.as_deref())?;
    genai("ocr", &model.name);
    let (out, headers) = run(&state, &ctx, model, image).await?;
    let lines: Vec<Value> = out
        .lines
        .iter()
        .map(|l| json!({ "text": l.text, "confidence": l.confidence, "box": l.corners }))
        .collect();
    let text = out.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n");
    let body = json!({
        "id": ctx.object_id("ocr"),
        "object": "ocr.result",
        "model": model.name,
        "width": out.width,
        "height": out.height,
        "text": text,
        "lines": lines,
        "usage": { "megapixels": f64::from(out.width) * f64::from(out.height) / 1e6 },
    });
    Ok(encode(|| (headers, Json(body)).into_response()))
}

/// An image sent as a KServe BYTES element: base64, or a data URL.
pub fn kserve_image(element: &str) -> Result<Bytes, ApiError> {
    let image = images::bytes_from_url(element).map_err(|e| ApiError::invalid("inputs[0]", e.to_string()))?;
    Ok(Bytes::from(image))
}
