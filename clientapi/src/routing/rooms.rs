use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::{CreateRoom, StateEventSpec};
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::producers::roomserver;
use crate::routing::directory;
use crate::routing::profile::{add_to_member_content, profile_of};
use crate::service::AppState;
use crate::storage;

#[derive(Deserialize)]
pub struct CreateRoomBody {
    preset: Option<String>,
    visibility: Option<String>,
    room_version: Option<String>,
    name: Option<String>,
    topic: Option<String>,
    #[serde(default)]
    invite: Vec<String>,
    #[serde(default)]
    initial_state: Vec<StateEventSpec>,
    creation_content: Option<Map<String, Value>>,
    power_level_content_override: Option<Map<String, Value>>,
    #[serde(default)]
    is_direct: bool,
    room_alias_name: Option<String>,
}

/// `POST /_matrix/client/v3/createRoom`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom>
///
/// The body is checked for shape here; the room server builds the events.
pub async fn create_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<CreateRoomBody>,
) -> Result<Json<Value>> {
    if let Some(preset) = &body.preset
        && !matches!(preset.as_str(), "private_chat" | "trusted_private_chat" | "public_chat")
    {
        return Err(MatrixError::bad_json(format!("Unknown preset: {preset}")).into());
    }
    if let Some(visibility) = &body.visibility
        && !matches!(visibility.as_str(), "public" | "private")
    {
        return Err(MatrixError::bad_json(format!("Unknown visibility: {visibility}")).into());
    }
    let invite = body
        .invite
        .iter()
        .map(|user_id| {
            OwnedUserId::try_from(user_id.as_str())
                .map_err(|_| MatrixError::invalid_param(format!("Invalid user id to invite: {user_id}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(bad) = body.initial_state.iter().find(|event| !event.content.is_object()) {
        return Err(
            MatrixError::bad_json(format!("initial_state content of {} must be an object", bad.event_type)).into()
        );
    }
    // The alias is checked before the room exists, and becomes its canonical alias.
    let alias = match &body.room_alias_name {
        Some(name) => {
            let alias = directory::local_alias(&state, &format!("#{name}:{}", state.server_name()))?;
            state.app_services.check_alias_free(&alias, state.app_services.of_caller(&user))?;
            if storage::directory::alias(&state.db, &alias).await?.is_some() {
                return Err(MatrixError::new(ErrorCode::RoomInUse, format!("Room alias {alias} already exists")).into());
            }
            Some(alias)
        }
        None => None,
    };
    let mut initial_state = body.initial_state;
    if let Some(alias) = &alias {
        initial_state.retain(|event| event.event_type != "m.room.canonical_alias");
        initial_state.push(StateEventSpec {
            event_type: "m.room.canonical_alias".to_owned(),
            state_key: String::new(),
            content: json!({ "alias": alias }),
        });
    }
    let publish = body.visibility.as_deref() == Some("public");
    let mut creator_profile = Map::new();
    add_to_member_content(&profile_of(&state, &user.user_id).await?, &mut creator_profile);
    let request = CreateRoom {
        creator: user.user_id.clone(),
        creator_profile,
        room_version: body.room_version,
        preset: body.preset,
        visibility: body.visibility,
        name: body.name,
        topic: body.topic,
        invite,
        is_direct: body.is_direct,
        initial_state,
        creation_content: body.creation_content,
        power_level_content_override: body.power_level_content_override,
    };
    let room_id = roomserver::create_room(&state.bus, request).await?;
    if let Some(alias) = &alias {
        let now = state.now_ms();
        if !storage::directory::create_alias(&state.db, alias, room_id.as_str(), user.user_id.as_str(), now).await? {
            // Taken between the check and now: the room exists, without the alias.
            tracing::warn!(%alias, %room_id, "room alias taken while the room was created");
        }
    }
    if publish {
        storage::directory::set_published(&state.db, room_id.as_str(), true).await?;
    }
    Ok(Json(json!({ "room_id": room_id })))
}

/// `GET /_matrix/client/v3/joined_rooms`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3joined_rooms>
pub async fn joined_rooms(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    let room_ids = roomserver::joined_rooms(&state.bus, &user.user_id).await?;
    Ok(Json(json!({ "joined_rooms": room_ids })))
}
