//! Device list changes between two sync tokens.

use axum::Json;
use axum::extract::{Request, State};
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::{AppState, query_params};
use crate::SyncApiError;
use crate::token::SyncToken;

/// GET /_matrix/client/v3/keys/changes
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3keyschanges>
///
/// Users who share a room with the requester and whose device keys changed
/// between `from` and `to` (both sync tokens), and those who shared a room
/// with the requester at `from` and share none at `to`.
pub async fn changes(State(state): State<AppState>, request: Request) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let params = query_params(&parts);
    let token = |name: &str| -> Result<SyncToken, SyncApiError> {
        let text = params.get(name).ok_or_else(|| MatrixError::invalid_param(format!("{name} is required")))?;
        Ok(text.parse::<SyncToken>()?)
    };
    let (from, to) = (token("from")?, token("to")?.min(state.notifier.current()));
    let user_id = identity.user_id.as_str();
    let changed = state.storage.device_lists_changed(user_id, from.device_lists, to.device_lists).await?;
    let left = state.storage.device_lists_left(user_id, from.events, to.events).await?;
    Ok(Json(json!({ "changed": changed, "left": left })))
}
