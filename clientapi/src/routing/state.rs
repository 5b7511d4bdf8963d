use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::{SendEvent, StoredEvent};
use myelin_types::events::client_event;
use myelin_types::ruma::{OwnedRoomId, RoomAliasId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::appservice::TimestampQuery;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, MatrixQuery};
use crate::producers::roomserver;
use crate::routing::{directory, parse_room_id};
use crate::service::AppState;
use crate::storage;

fn to_client(event: &StoredEvent) -> Value {
    client_event(&event.pdu, event.event_id.as_str(), event.room_id.as_str())
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstate>
pub async fn get_state(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let events = roomserver::room_state(&state.bus, &room_id, &user.user_id, None, None).await?;
    Ok(Json(Value::Array(events.iter().map(to_client).collect())))
}

#[derive(Deserialize, Default)]
pub struct StateEventQuery {
    /// `content` (the default) or `event`.
    format: Option<String>,
}

async fn state_event(
    state: &AppState,
    user: &AuthedUser,
    room_id: &str,
    event_type: &str,
    state_key: &str,
    format: Option<&str>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    let events = roomserver::room_state(&state.bus, &room_id, &user.user_id, Some(event_type), Some(state_key)).await?;
    let event = events
        .iter()
        .find(|e| e.pdu["type"].as_str() == Some(event_type) && e.pdu["state_key"].as_str() == Some(state_key))
        .ok_or_else(|| MatrixError::not_found("Event not found"))?;
    match format {
        Some("event") => Ok(Json(to_client(event))),
        _ => Ok(Json(event.pdu.get("content").cloned().unwrap_or_else(|| json!({})))),
    }
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn get_state_event(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((room_id, event_type, state_key)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> Result<Json<Value>> {
    state_event(&state, &user, &room_id, &event_type, &state_key, query.format.as_deref()).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn get_state_empty_key(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((room_id, event_type)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<StateEventQuery>,
) -> Result<Json<Value>> {
    state_event(&state, &user, &room_id, &event_type, "", query.format.as_deref()).await
}

async fn send_state(
    state: &AppState,
    user: AuthedUser,
    room_id: &str,
    event_type: String,
    state_key: String,
    content: Map<String, Value>,
    origin_server_ts: Option<u64>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(room_id)?;
    if event_type == "m.room.canonical_alias" && state_key.is_empty() {
        check_canonical_alias(state, &room_id, &content).await?;
    }
    let request = SendEvent {
        room_id,
        sender: user.user_id,
        event_type,
        state_key: Some(state_key),
        content: Value::Object(content),
        txn: None,
        sender_is_guest: user.is_guest,
        origin_server_ts,
    };
    let event_id = roomserver::send_event(&state.bus, request).await?;
    Ok(Json(json!({ "event_id": event_id })))
}

/// `400 M_BAD_ALIAS` unless every alias in `m.room.canonical_alias` content
/// (`alias`, `alt_aliases`) points to the room; malformed ones are
/// `400 M_INVALID_PARAM`. Aliases of other servers cannot be checked
/// without federation, so they are refused too.
async fn check_canonical_alias(state: &AppState, room_id: &OwnedRoomId, content: &Map<String, Value>) -> Result<()> {
    let mut aliases = Vec::new();
    match content.get("alias") {
        None | Some(Value::Null) => {}
        Some(Value::String(alias)) => aliases.push(alias.as_str()),
        Some(_) => return Err(MatrixError::invalid_param("alias must be a string").into()),
    }
    match content.get("alt_aliases") {
        None => {}
        Some(Value::Array(alt)) => {
            for alias in alt {
                aliases.push(alias.as_str().ok_or_else(|| MatrixError::invalid_param("alt_aliases must be strings"))?);
            }
        }
        Some(_) => return Err(MatrixError::invalid_param("alt_aliases must be an array").into()),
    }
    for alias in aliases {
        if <&RoomAliasId>::try_from(alias).is_err() {
            return Err(MatrixError::invalid_param(format!("Invalid room alias: {alias}")).into());
        }
        let points_here = match directory::local_alias(state, alias) {
            Ok(alias) => {
                storage::directory::alias(&state.db, &alias).await?.is_some_and(|(room, _)| room == room_id.as_str())
            }
            Err(_) => false,
        };
        if !points_here {
            return Err(MatrixError::new(
                ErrorCode::BadAlias,
                format!("Room alias {alias} does not point to this room"),
            )
            .into());
        }
    }
    Ok(())
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn put_state(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((room_id, event_type, state_key)): MatrixPath<(String, String, String)>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let ts = query.for_caller(&user)?;
    send_state(&state, user, &room_id, event_type, state_key, content, ts).await
}

/// `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}` (empty state key)
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn put_state_empty_key(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((room_id, event_type)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let ts = query.for_caller(&user)?;
    send_state(&state, user, &room_id, event_type, String::new(), content, ts).await
}

/// `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidjoined_members>
///
/// Only for current members: someone who left gets `M_FORBIDDEN`.
pub async fn joined_members(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let events = roomserver::room_state(&state.bus, &room_id, &user.user_id, Some("m.room.member"), None).await?;
    let joined: Map<String, Value> = events
        .iter()
        .filter(|e| e.pdu["type"] == "m.room.member" && e.pdu["content"]["membership"] == "join")
        .filter_map(|e| {
            let user_id = e.pdu["state_key"].as_str()?;
            let content = &e.pdu["content"];
            let mut profile = Map::new();
            for (ours, theirs) in [("display_name", "displayname"), ("avatar_url", "avatar_url")] {
                if let Some(value) = content.get(theirs).filter(|v| v.is_string()) {
                    profile.insert(ours.to_owned(), value.clone());
                }
            }
            Some((user_id.to_owned(), Value::Object(profile)))
        })
        .collect();
    if !joined.contains_key(user.user_id.as_str()) {
        return Err(MatrixError::forbidden("You are not joined to this room").into());
    }
    Ok(Json(json!({ "joined": joined })))
}
