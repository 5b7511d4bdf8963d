//! Membership changes, each an `m.room.member` event the room server builds
//! and auth-checks.

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::SendEvent;
use myelin_types::ruma::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, OptionalJson};
use crate::producers::roomserver;
use crate::routing::profile::{add_to_member_content, profile_of};
use crate::routing::{directory, parse_room_id, parse_user_id};
use crate::service::AppState;

#[derive(Deserialize, Default)]
pub struct ReasonBody {
    reason: Option<String>,
}

#[derive(Deserialize)]
pub struct TargetBody {
    user_id: String,
    reason: Option<String>,
}

pub(crate) async fn set_membership(
    state: &AppState,
    sender: OwnedUserId,
    room_id: OwnedRoomId,
    target: &OwnedUserId,
    membership: &str,
    reason: Option<String>,
) -> Result<()> {
    let mut content = Map::new();
    content.insert("membership".to_owned(), Value::from(membership));
    // A join shows the joiner's profile, as later profile changes will.
    if membership == "join" && *target == sender {
        add_to_member_content(&profile_of(state, &sender).await?, &mut content);
    }
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), Value::from(reason));
    }
    let request = SendEvent {
        room_id,
        sender,
        event_type: "m.room.member".to_owned(),
        state_key: Some(target.to_string()),
        content: Value::Object(content),
        txn: None,
    };
    roomserver::send_event(&state.bus, request).await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidjoin>
pub async fn join_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    set_membership(&state, user.user_id.clone(), room_id.clone(), &user.user_id, "join", body.reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3joinroomidoralias>
///
/// Aliases are resolved locally; those of other servers need federation,
/// which is not served yet (`400 M_INVALID_PARAM`).
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(target): MatrixPath<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id =
        if target.starts_with('#') { directory::resolve(&state, &target).await? } else { parse_room_id(&target)? };
    set_membership(&state, user.user_id.clone(), room_id.clone(), &user.user_id, "join", body.reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidleave>
pub async fn leave(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    set_membership(&state, user.user_id.clone(), room_id, &user.user_id, "leave", body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/invite`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidinvite>
pub async fn invite(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let target = parse_user_id(&body.user_id)?;
    set_membership(&state, user.user_id, room_id, &target, "invite", body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidkick>
pub async fn kick(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let target = parse_user_id(&body.user_id)?;
    set_membership(&state, user.user_id, room_id, &target, "leave", body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/ban`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidban>
pub async fn ban(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let target = parse_user_id(&body.user_id)?;
    set_membership(&state, user.user_id, room_id, &target, "ban", body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/unban`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidunban>
pub async fn unban(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let target = parse_user_id(&body.user_id)?;
    set_membership(&state, user.user_id, room_id, &target, "leave", body.reason).await?;
    Ok(Json(json!({})))
}
