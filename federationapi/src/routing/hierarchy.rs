//! GET /_matrix/federation/v1/hierarchy/{roomId}
//! <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1hierarchyroomid>
//!
//! A space of this server and its children as the origin may see them
//! (the room server judges each room for the origin: one of its users
//! joined, `world_readable`, an open join rule, or a restricted one whose
//! allowed rooms it is in). The origin filters further for its user.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use myelin_roomserver::api::{QueryOk, QueryRequest, Reader};
use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedRoomId, ServerName};
use serde_json::{Value, json};

use super::auth::Origin;
use super::{FederationState, check_acl, parse_room_id, query_room_server, server_allowed, unexpected};

pub(super) async fn get_hierarchy(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    check_acl(&state, &origin, &room_id).await?;
    let suggested_only = suggested_only(query.as_deref())?;
    let not_found = || MatrixError::not_found(format!("{room_id} is unknown or not visible to {origin}"));
    let room = space_room(&state, &origin, &room_id).await?.flatten().ok_or_else(not_found)?;
    let (mut children, mut inaccessible) = (Vec::new(), Vec::new());
    for child in child_ids(&room, suggested_only) {
        match space_room(&state, &origin, &child).await? {
            Some(Some(summary)) if server_allowed(&state, &origin, &child).await? => children.push(summary),
            Some(_) => inaccessible.push(child),
            // Unknown here: nothing to say about it, so it is left out.
            None => {}
        }
    }
    Ok(Json(json!({ "room": room, "children": children, "inaccessible_children": inaccessible })))
}

/// `suggested_only` of the query (`false` when absent); `400
/// M_INVALID_PARAM` for anything but `true` or `false`.
fn suggested_only(query: Option<&str>) -> Result<bool, MatrixError> {
    let value = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "suggested_only")
        .map(|(_, value)| value.into_owned());
    match value.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(MatrixError::invalid_param(format!("suggested_only must be true or false, not {other}"))),
    }
}

/// The room's summary for `origin`: `None` when this server does not have
/// the room, `Some(None)` when the origin may not see it.
async fn space_room(
    state: &FederationState,
    origin: &ServerName,
    room_id: &OwnedRoomId,
) -> Result<Option<Option<Value>>, MatrixError> {
    let request = QueryRequest::SpaceRoom { room_id: room_id.clone(), reader: Reader::Server(origin.to_owned()) };
    match query_room_server(state, room_id.as_str(), &request).await {
        Ok(QueryOk::SpaceRoom { room, accessible }) => Ok(Some(accessible.then_some(room))),
        Ok(other) => Err(unexpected(other)),
        Err(error) if error.errcode == myelin_types::ErrorCode::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// The rooms the space's child events name (only suggested ones if asked).
fn child_ids(room: &Value, suggested_only: bool) -> Vec<OwnedRoomId> {
    let events = room["children_state"].as_array().into_iter().flatten();
    events
        .filter(|event| !suggested_only || event["content"]["suggested"] == true)
        .filter_map(|event| event["state_key"].as_str().and_then(|id| OwnedRoomId::try_from(id).ok()))
        .collect()
}
