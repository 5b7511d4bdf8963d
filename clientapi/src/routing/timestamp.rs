//! Jumping to a date in a room's history.

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::Reader;
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixPath, MatrixQuery};
use crate::producers::roomserver;
use crate::routing::parse_room_id;
use crate::service::AppState;

#[derive(Deserialize)]
pub struct TimestampQuery {
    ts: i64,
    dir: String,
}

/// `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>
///
/// The room server finds the nearest event the caller may see by history
/// visibility; `404 M_NOT_FOUND` when there is none (or no such room).
pub async fn timestamp_to_event(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let forward = match query.dir.as_str() {
        "f" => true,
        "b" => false,
        _ => return Err(MatrixError::invalid_param("dir must be f or b").into()),
    };
    let (event_id, origin_server_ts) =
        roomserver::timestamp_to_event(&state.bus, &room_id, query.ts, forward, Reader::User(user.user_id)).await?;
    Ok(Json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
}
