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

/// Every served model and alias the caller may use.
pub async fn list(State(state): State<SharedState>, ctx: RequestContext) -> Json<ModelList> {
    let mut data: Vec<ModelObject> =
        state.models.iter().filter(|m| ctx.allows(&m.name)).map(|m| object(&state, m)).collect();
    let mut aliases: Vec<(&String, &crate::state::Alias)> =
        state.aliases.iter().filter(|(name, _)| ctx.allows(name)).collect();
    aliases.sort_by_key(|(name, _)| *name);
    data.extend(aliases.into_iter().map(|(name, alias)| ModelObject {
        id: name.clone(),
        object: "model",
        created: state.started,
        owned_by: "infergate",
        task: alias.task().as_str(),
    }));
    Json(ModelList { object: "list", data })
}

/// One model by name (names may contain `/`).
pub async fn retrieve(
    State(state): State<SharedState>,
    ctx: RequestContext,
    Path(name): Path<String>,
) -> Result<Json<ModelObject>, ApiError> {
    let model = state.model_of(&ctx, &name)?;
    let mut object = object(&state, model);
    object.id = name;
    Ok(Json(object))
}
