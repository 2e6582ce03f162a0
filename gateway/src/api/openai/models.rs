//! `GET /v1/models` and `GET /v1/models/{model}`.

use axum::extract::{Path, State};
use axum::Json;
use serde::Serialize;

use crate::context::RequestContext;
use crate::error::ApiError;
use crate::runner::ModelHandle;
use crate::state::SharedState;

/// OpenAI's model object, plus the task it serves.
#[derive(Debug, Serialize)]
pub struct ModelObject {
    id: String,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    /// infergate's addition: which task the model serves.
    task: &'static str,
}

/// OpenAI's list wrapper.
#[derive(Debug, Serialize)]
pub struct ModelList {
    object: &'static str,
    data: Vec<ModelObject>,
}

fn object(state: &SharedState, model: &ModelHandle) -> ModelObject {
    ModelObject {
        id: model.name.clone(),
        object: "model",
        created: state.started,
        owned_by: model.info.owned_by,
        task: model.task.as_str(),
    }
}

/// Every served model the caller may use.
pub async fn list(State(state): State<SharedState>, ctx: RequestContext) -> Json<ModelList> {
    let data = state.models.iter().filter(|m| ctx.allows(&m.name)).map(|m| object(&state, m)).collect();
    Json(ModelList { object: "list", data })
}

/// One model by name (names may contain `/`).
pub async fn retrieve(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let model = state.model_of(&ctx, &name)?;
    Ok(Json(object(&state, model)))
}
