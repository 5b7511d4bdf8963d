//! Typing notifications: checked here, published on `edu.typing`, kept in
//! memory by the sync API.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::TypingUpdate;
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::producers;
use crate::routing::{parse_room_id, require_joined, require_self};
use crate::service::AppState;

/// How long typing lasts when the client gives no timeout, and at most.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MAX_TIMEOUT_MS: u64 = 120_000;

#[derive(Deserialize)]
pub struct TypingBody {
    typing: bool,
    timeout: Option<u64>,
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidtypinguserid>
pub async fn typing(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, target)): MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<TypingBody>,
) -> Result<Json<Value>> {
    require_self(&user, &target, "set typing")?;
    let room_id = parse_room_id(&room_id)?;
    require_joined(&state, &room_id, &user.user_id).await?;
    let now = state.bus.clock().now_ms();
    let expires_ms =
        if body.typing { now + body.timeout.unwrap_or(DEFAULT_TIMEOUT_MS).min(MAX_TIMEOUT_MS) } else { now };
    let update = TypingUpdate { room_id, user_id: user.user_id, typing: body.typing, expires_ms };
    producers::edu::typing(&state.bus, &update).await?;
    Ok(Json(json!({})))
}
