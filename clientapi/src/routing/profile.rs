//! Profiles of local users, and other servers' users' profiles asked of
//! their servers (through the federation API, never stored). A change is
//! copied into the user's `m.room.member` event in every room they are
//! joined to.

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::SendEvent;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde_json::{Map, Value, json};

use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::producers::{federation, roomserver};
use crate::routing::{parse_user_id, require_self};
use crate::service::AppState;
use crate::storage::accounts::{self, Profile};

/// The profile of a local user; `404 M_NOT_FOUND` for anyone else.
pub(crate) async fn profile_of(state: &AppState, user_id: &OwnedUserId) -> Result<Profile> {
    let not_found = || MatrixError::not_found("Profile not found");
    if user_id.server_name().as_str() != state.server_name() {
        return Err(not_found().into());
    }
    Ok(accounts::profile(&state.db, user_id.localpart()).await?.ok_or_else(not_found)?)
}

/// Add the profile's fields to `m.room.member` content.
pub(crate) fn add_to_member_content(profile: &Profile, content: &mut Map<String, Value>) {
    for (key, value) in [("displayname", &profile.displayname), ("avatar_url", &profile.avatar_url)] {
        match value {
            Some(value) => content.insert(key.to_owned(), Value::from(value.as_str())),
            None => content.remove(key),
        };
    }
}

/// The profile of any user: asked of their server if it is another one.
async fn any_profile(state: &AppState, user_id: &str) -> Result<Profile> {
    let user_id = parse_user_id(user_id)?;
    if user_id.server_name().as_str() == state.server_name() {
        return profile_of(state, &user_id).await;
    }
    let remote = federation::remote_profile(&state.bus, user_id).await?;
    Ok(Profile { displayname: remote.displayname, avatar_url: remote.avatar_url })
}

/// `GET /_matrix/client/v3/profile/{userId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuserid>
pub async fn get_profile(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let profile = any_profile(&state, &user_id).await?;
    let mut body = Map::new();
    add_to_member_content(&profile, &mut body);
    Ok(Json(Value::Object(body)))
}

async fn get_field(state: &AppState, user_id: &str, field: &str) -> Result<Json<Value>> {
    let profile = any_profile(state, user_id).await?;
    let value = match field {
        "displayname" => profile.displayname,
        _ => profile.avatar_url,
    };
    let value = value.ok_or_else(|| MatrixError::not_found(format!("No {field} set")))?;
    Ok(Json(json!({ field: value })))
}

/// `GET /_matrix/client/v3/profile/{userId}/displayname`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuseriddisplayname>
pub async fn get_displayname(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    get_field(&state, &user_id, "displayname").await
}

/// `GET /_matrix/client/v3/profile/{userId}/avatar_url`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuseridavatar_url>
pub async fn get_avatar_url(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    get_field(&state, &user_id, "avatar_url").await
}

/// Set one field (`null` clears it), then update the member events.
async fn put_field(
    state: &AppState,
    user: &AuthedUser,
    target: &str,
    field: &str,
    body: &Map<String, Value>,
) -> Result<Json<Value>> {
    require_self(user, target, "change the profile")?;
    let value = match body.get(field) {
        Some(Value::String(value)) => Some(value.clone()),
        Some(Value::Null) => None,
        Some(_) => return Err(MatrixError::bad_json(format!("{field} must be a string")).into()),
        None => return Err(MatrixError::bad_json(format!("Missing {field}")).into()),
    };
    let mut profile = profile_of(state, &user.user_id).await?;
    match field {
        "displayname" => profile.displayname = value,
        _ => profile.avatar_url = value,
    }
    if !accounts::set_profile(&state.db, user.user_id.localpart(), &profile).await? {
        return Err(MatrixError::not_found("Profile not found").into());
    }
    update_member_events(state, user, &profile).await?;
    Ok(Json(json!({})))
}

/// Send a new `m.room.member` event carrying `profile` in each joined room.
/// A room that refuses is logged and skipped: the profile itself is saved,
/// and one room must not keep the others stale.
async fn update_member_events(state: &AppState, user: &AuthedUser, profile: &Profile) -> Result<()> {
    let user_id = &user.user_id;
    for room_id in roomserver::joined_rooms(&state.bus, user_id).await? {
        let update = async {
            let events =
                roomserver::room_state(&state.bus, &room_id, user_id, Some("m.room.member"), Some(user_id.as_str()))
                    .await?;
            let mut content = events
                .iter()
                .find(|e| e.pdu["state_key"].as_str() == Some(user_id.as_str()))
                .and_then(|e| e.pdu["content"].as_object().cloned())
                .unwrap_or_default();
            if content.get("membership").and_then(Value::as_str) != Some("join") {
                return Ok(());
            }
            add_to_member_content(profile, &mut content);
            let request = SendEvent {
                room_id: room_id.clone(),
                sender: user_id.clone(),
                event_type: "m.room.member".to_owned(),
                state_key: Some(user_id.to_string()),
                content: Value::Object(content),
                txn: None,
                sender_is_guest: user.is_guest,
            };
            roomserver::send_event(&state.bus, request).await.map(drop)
        };
        if let Err(error) = update.await {
            tracing::warn!(%room_id, %error, "could not update the member event for a profile change");
        }
    }
    Ok(())
}

/// `PUT /_matrix/client/v3/profile/{userId}/displayname`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseriddisplayname>
pub async fn put_displayname(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(target): MatrixPath<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    put_field(&state, &user, &target, "displayname", &body).await
}

/// `PUT /_matrix/client/v3/profile/{userId}/avatar_url`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseridavatar_url>
pub async fn put_avatar_url(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(target): MatrixPath<String>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    put_field(&state, &user, &target, "avatar_url", &body).await
}
