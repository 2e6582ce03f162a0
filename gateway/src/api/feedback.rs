//! `POST /v1/feedback`: a tenant's verdict on one of its answers, named by
//! the answer's `x-request-id`, for the training pipeline (`[feedback]`).
//! 202 once queued for the sinks; 404 for an id this tenant got no answer
//! to within `[feedback] window` (another tenant's included).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::api::extract::JsonBody;
use crate::context::RequestContext;
use crate::error::ApiError;
use crate::feedback::{Feedback, Given};
use crate::state::SharedState;

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackBody {
    pub request_id: String,
    /// 0 (bad) to 1 (good).
    #[serde(default)]
    pub score: Option<f64>,
    /// A class instead of (or with) a score: `wrong_language`, `offensive`, …
    #[serde(default)]
    pub label: Option<String>,
    /// What the answer should have been.
    #[serde(default)]
    pub correction: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

/// Longest label, correction and comment accepted, in bytes.
const MAX_LABEL: usize = 64;
const MAX_TEXT: usize = 64 * 1024;

pub async fn create(
    State(state): State<SharedState>,
    ctx: RequestContext,
    JsonBody(body): JsonBody<FeedbackBody>,
) -> Result<Response, ApiError> {
    let Some(feedback) = &state.feedback else {
        return Err(ApiError::RouteNotFound { method: "POST".into(), path: "/v1/feedback".into() });
    };
    if body.request_id.is_empty() || body.request_id.len() > state.config.server.max_request_id_bytes {
        return Err(ApiError::invalid("request_id", "'request_id' must be the x-request-id of an answer"));
    }
    if let Some(score) = body.score {
        if !(0.0..=1.0).contains(&score) {
            return Err(ApiError::invalid("score", format!("'score' must be between 0 and 1, got {score}")));
        }
    }
    if let Some(label) = &body.label {
        let word = |c: char| c.is_ascii_alphanumeric() || "_-.:".contains(c);
        if label.is_empty() || label.len() > MAX_LABEL || !label.chars().all(word) {
            return Err(ApiError::invalid("label", "'label' must be 1-64 letters, digits and _ - . :"));
        }
    }
    if body.score.is_none() && body.label.is_none() {
        return Err(ApiError::bad_request("give a 'score' (0 to 1) or a 'label'"));
    }
    for (name, text) in [("correction", &body.correction), ("comment", &body.comment)] {
        if text.as_ref().is_some_and(|t| t.len() > MAX_TEXT) {
            return Err(ApiError::invalid(name, format!("'{name}' is longer than {MAX_TEXT} bytes")));
        }
    }
    let answered = feedback
        .answered(&ctx.tenant, &body.request_id)
        .await
        .ok_or_else(|| ApiError::AnswerNotFound { request_id: body.request_id.clone() })?;
    // A correction and a comment are content: kept only where the tenant allows it.
    let content = ctx.policy.as_ref().is_some_and(|p| p.capture_content);
    let given = Given {
        score: body.score,
        label: body.label,
        correction: body.correction.filter(|_| content),
        comment: body.comment.filter(|_| content),
    };
    feedback.record("feedback", Feedback::feedback_event(&answered, &ctx.tenant, &body.request_id, given));
    let answer = json!({
        "object": "feedback",
        "request_id": body.request_id,
        "status": "accepted",
        "content_recorded": content,
    });
    Ok((StatusCode::ACCEPTED, Json(answer)).into_response())
}
