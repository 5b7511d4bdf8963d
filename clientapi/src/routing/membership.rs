//! Membership changes, each an `m.room.member` event the room server builds
//! and auth-checks.

use std::collections::HashSet;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use myelin_roomserver::api::SendEvent;
use myelin_types::ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::RoomForgotten;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::{ClientApiError, Result};
use crate::json::{MatrixJson, MatrixPath, OptionalJson};
use crate::producers::{edu, federation, roomserver};
use crate::routing::profile::{add_to_member_content, profile_of};
use crate::routing::{directory, parse_room_id, parse_user_id};
use crate::service::AppState;
use crate::storage;

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
    let content = member_content(state, &sender, target, membership, reason).await?;
    let request = SendEvent {
        room_id,
        sender,
        event_type: "m.room.member".to_owned(),
        state_key: Some(target.to_string()),
        content,
        txn: None,
        sender_is_guest: false,
        origin_server_ts: None,
    };
    roomserver::send_event(&state.bus, request).await?;
    Ok(())
}

async fn member_content(
    state: &AppState,
    sender: &OwnedUserId,
    target: &OwnedUserId,
    membership: &str,
    reason: Option<String>,
) -> Result<Value> {
    let mut content = Map::new();
    content.insert("membership".to_owned(), Value::from(membership));
    // A join shows the joiner's profile, as later profile changes will.
    if membership == "join" && target == sender {
        add_to_member_content(&profile_of(state, sender).await?, &mut content);
    }
    if let Some(reason) = reason {
        content.insert("reason".to_owned(), Value::from(reason));
    }
    Ok(Value::Object(content))
}

/// Join `room_id`: locally when this server is in the room, else through
/// the federation API, asking `servers`, then the server of the user who
/// invited this one, then the server that created the room (when its id
/// still names one). A guest joins only rooms this
/// server is in, where the room server can check `m.room.guest_access`
/// before the join.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms> and
/// <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
async fn join(
    state: &AppState,
    user: AuthedUser,
    room_id: OwnedRoomId,
    mut servers: Vec<OwnedServerName>,
    reason: Option<String>,
) -> Result<()> {
    let content = member_content(state, &user.user_id, &user.user_id, "join", reason).await?;
    let request = SendEvent {
        room_id: room_id.clone(),
        sender: user.user_id.clone(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(user.user_id.to_string()),
        content: content.clone(),
        txn: None,
        sender_is_guest: user.is_guest,
        origin_server_ts: None,
    };
    let unknown = match roomserver::send_event(&state.bus, request).await {
        // The room server answers M_NOT_FOUND for a join to a room it does not have.
        Err(ClientApiError::Matrix(error @ MatrixError { errcode: ErrorCode::NotFound, .. })) => error,
        other => return other.map(drop),
    };
    if user.is_guest {
        return Err(MatrixError::forbidden("Guests may only join rooms this server is in").into());
    }
    // An invite's server is in the room: the client need not name it.
    if let Some(invite) = roomserver::membership(&state.bus, &room_id, &user.user_id).await?
        && invite.membership == "invite"
    {
        servers.push(invite.sender.server_name().to_owned());
    }
    servers.extend(room_id.server_name().map(ToOwned::to_owned));
    servers.retain(|server| server.as_str() != state.server_name());
    let mut seen = HashSet::new();
    servers.retain(|server| seen.insert(server.clone()));
    if servers.is_empty() {
        return Err(unknown.into());
    }
    federation::join_room(&state.bus, room_id, user.user_id, servers, content).await?;
    Ok(())
}

/// `POST /_matrix/client/v3/rooms/{roomId}/join`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidjoin>
pub async fn join_room(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    join(&state, user, room_id.clone(), Vec::new(), body.reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// `POST /_matrix/client/v3/join/{roomIdOrAlias}?server_name=…&via=…`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3joinroomidoralias>
///
/// Local aliases are resolved from our table, those of other servers by
/// their server (`/query/directory`), whose answer also says where to join.
pub async fn join_by_id_or_alias(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(target): MatrixPath<String>,
    RawQuery(query): RawQuery,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let (room_id, servers) = resolve_target(&state, &target, query.as_deref()).await?;
    join(&state, user, room_id.clone(), servers, body.reason).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// The room a `{roomIdOrAlias}` names and the servers to reach it through:
/// those another server's alias answer names, then `via` and `server_name`.
async fn resolve_target(
    state: &AppState,
    target: &str,
    query: Option<&str>,
) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let (room_id, mut servers) = if target.starts_with('#') {
        let alias = OwnedRoomAliasId::try_from(target)
            .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias: {target}")))?;
        if alias.server_name().as_str() == state.server_name() {
            (directory::resolve(state, target).await?, Vec::new())
        } else {
            federation::resolve_alias(&state.bus, alias).await?
        }
    } else {
        (parse_room_id(target)?, Vec::new())
    };
    servers.extend(via_servers(query.unwrap_or_default())?);
    Ok((room_id, servers))
}

/// `POST /_matrix/client/v3/knock/{roomIdOrAlias}?via=…&server_name=…`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3knockroomidoralias>
///
/// A knock on a room this server is in is an ordinary event (the auth
/// rules want join rule `knock` or `knock_restricted`, room version 7 or
/// later, and a user neither joined, invited nor banned); on another
/// server's room it goes through the federation API like a join.
pub async fn knock(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(target): MatrixPath<String>,
    RawQuery(query): RawQuery,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let (room_id, mut servers) = resolve_target(&state, &target, query.as_deref()).await?;
    let content = member_content(&state, &user.user_id, &user.user_id, "knock", body.reason).await?;
    let request = SendEvent {
        room_id: room_id.clone(),
        sender: user.user_id.clone(),
        event_type: "m.room.member".to_owned(),
        state_key: Some(user.user_id.to_string()),
        content: content.clone(),
        txn: None,
        sender_is_guest: false,
        origin_server_ts: None,
    };
    let unknown = match roomserver::send_event(&state.bus, request).await {
        // The room server answers M_NOT_FOUND for a room it does not have.
        Err(ClientApiError::Matrix(error @ MatrixError { errcode: ErrorCode::NotFound, .. })) => error,
        other => return other.map(|_| Json(json!({ "room_id": room_id }))),
    };
    servers.extend(room_id.server_name().map(ToOwned::to_owned));
    servers.retain(|server| server.as_str() != state.server_name());
    if servers.is_empty() {
        return Err(unknown.into());
    }
    federation::knock_room(&state.bus, room_id.clone(), user.user_id, servers, content).await?;
    Ok(Json(json!({ "room_id": room_id })))
}

/// The `via` (and deprecated `server_name`) query parameters, in order.
fn via_servers(query: &str) -> Result<Vec<OwnedServerName>> {
    let mut servers = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "via" && key != "server_name" {
            continue;
        }
        let value = percent_decode(value);
        let server = OwnedServerName::try_from(value.as_str())
            .map_err(|_| MatrixError::invalid_param(format!("Invalid server name: {value}")))?;
        servers.push(server);
    }
    Ok(servers)
}

/// Query values as clients encode them (`%3A` for `:`); invalid escapes stay as they are.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| value.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                decoded.push(byte);
                i += 3;
            }
            None => {
                decoded.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidleave>
pub async fn leave(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(room_id): MatrixPath<String>,
    OptionalJson(body): OptionalJson<ReasonBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    set_membership(&state, user.user_id.clone(), room_id, &user.user_id, "leave", body.reason).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/rooms/{roomId}/forget`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidforget>
///
/// Only a room the user has left (or was banned from) can be forgotten:
/// `400 M_UNKNOWN` while joined, invited or knocking. The sync API hides
/// the room and its history from the user up to the forgotten membership
/// event (a later join shows it again); a room the user was never in is
/// already forgotten.
pub async fn forget(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let Some(current) = roomserver::membership(&state.bus, &room_id, &user.user_id).await? else {
        return Ok(Json(json!({})));
    };
    if current.membership != "leave" && current.membership != "ban" {
        return Err(MatrixError::new(
            ErrorCode::Unknown,
            format!("You must leave the room before forgetting it (membership is {})", current.membership),
        )
        .with_status(StatusCode::BAD_REQUEST)
        .into());
    }
    let record = RoomForgotten { user_id: user.user_id, room_id, event_id: current.event_id };
    edu::room_forgotten(&state.bus, &record).await?;
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
    // An application service may create an invited user of its namespace
    // on demand; the invite goes ahead whatever it answers.
    if target.server_name().as_str() == state.server_name()
        && state.app_services.claims_user(target.as_str())
        && !storage::accounts::exists(&state.db, target.localpart()).await?
    {
        state.app_services.query_user(target.as_str()).await;
    }
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

#[cfg(test)]
mod tests {
    #[test]
    fn via_servers_are_read_in_order_and_decoded() {
        let servers = super::via_servers("via=b.example%3A8448&server_name=a.example&other=x").unwrap();
        assert_eq!(servers, ["b.example:8448", "a.example"]);
        assert!(super::via_servers("via=not%20a%20server").is_err());
    }
}
