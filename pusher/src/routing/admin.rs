//! Admin limits on what push gateways learn of one room's events.
//!
//! Not in the spec: an operator's control (DESIGN.md invariant 9) beside
//! the server-wide `pusher.content`. The room's level can only lower the
//! server's, never raise it.

use axum::Json;
use axum::extract::State;
use myelin_config::PushContent;
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Authed, MatrixJson, MatrixPath};
use crate::PusherError;

#[derive(Deserialize)]
pub struct RoomContentBody {
    push_content: Value,
}

fn require_admin(Authed(caller): &Authed) -> Result<(), PusherError> {
    if caller.identity.is_admin {
        Ok(())
    } else {
        Err(MatrixError::forbidden("Only a server admin may limit a room's pushes").into())
    }
}

/// `GET /_myelin/admin/v1/rooms/{roomId}/push_content`
pub async fn get_room_content(
    State(state): State<AppState>,
    caller: Authed,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>, PusherError> {
    require_admin(&caller)?;
    let level = state.storage.room_content(&room_id).await?;
    Ok(Json(json!({ "push_content": level })))
}

/// `PUT /_myelin/admin/v1/rooms/{roomId}/push_content`, body
/// `{"push_content": "full" | "metadata" | "event_id_only" | "none" | null}`
/// (`null` removes the room's limit).
pub async fn put_room_content(
    State(state): State<AppState>,
    caller: Authed,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<RoomContentBody>,
) -> Result<Json<Value>, PusherError> {
    require_admin(&caller)?;
    if !room_id.starts_with('!') {
        return Err(MatrixError::invalid_param("Not a room id").into());
    }
    let level: Option<PushContent> = serde_json::from_value(body.push_content).map_err(|_| {
        MatrixError::invalid_param("push_content must be one of full, metadata, event_id_only, none, or null")
    })?;
    state.storage.set_room_content(&room_id, level).await?;
    Ok(Json(json!({})))
}
