//! `POST /v1/ocr`: the text lines of an image, with confidence and box.
//!
//! The image comes as JSON (`{"model": …, "image": "data:image/png;base64,…"}`
//! or bare base64), as multipart (`file`, optional `model`), or as the raw
//! body (`Content-Type: image/png|jpeg|webp`, `?model=` optional). Its size
//! is read from the header and checked against `limits.max_image_pixels`
//! before it is queued (the call layer's [`Image`] job); the backend decodes it.

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http::header;
use infergate_backends::onnx::images;
use infergate_backends::Task;
use infergate_otel::names::spans;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::api::extract::{decode_json, dispatch_headers, encode, read_body};
use crate::call::{Call, Image, Operation};
use crate::context::RequestContext;
use crate::error::ApiError;
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
            let bytes = read_body(request.into_body(), limit).await?;
            let body: OcrBody = decode_json(&bytes, state.config.limits.max_json_depth)?;
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
                if crate::api::extract::is_timeout(&e) {
                    ApiError::BodyTimeout
                } else if e.status() == http::StatusCode::PAYLOAD_TOO_LARGE {
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

/// `POST /v1/ocr`.
pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    request: Request,
) -> Result<Response, ApiError> {
    let (image, name) = read_image(request, &state).instrument(tracing::info_span!(spans::DECODE)).await?;
    let call = Call::open(&state, ctx, name.as_deref(), Task::Ocr, Operation::Ocr).await?;
    let answer = call.once(Image(image)).await?;
    let headers = dispatch_headers(&answer.dispatch);
    let out = answer.output;
    let lines: Vec<Value> = out
        .lines
        .iter()
        .map(|l| json!({ "text": l.text, "confidence": l.confidence, "box": l.corners }))
        .collect();
    let text = out.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>().join("\n");
    let body = json!({
        "id": call.ctx().object_id("ocr"),
        "object": "ocr.result",
        "model": call.model().name,
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

/// The fuzz target's way in (`fuzz/`): the image read from any body form.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) async fn fuzz(request: Request, state: &SharedState) -> Result<(), ApiError> {
    read_image(request, state).await.map(drop)
}
