//! Profiles of local users, and other servers' users' profiles asked of
//! their servers (through the federation API, never stored). A change is
//! copied into the user's `m.room.member` event in every room they are
//! joined to.

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::SendEvent;
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError};
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

/// The longest field name (`M_KEY_TOO_LARGE` beyond it).
const MAX_KEY_BYTES: usize = 255;
/// The largest whole profile, as JSON (`M_PROFILE_TOO_LARGE` beyond it).
const MAX_PROFILE_BYTES: usize = 64 * 1024;

/// Add the profile's fields to `m.room.member` content.
pub(crate) fn add_to_member_content(profile: &Profile, content: &mut Map<String, Value>) {
    for (key, value) in [("displayname", &profile.displayname), ("avatar_url", &profile.avatar_url)] {
        match value {
            Some(value) => content.insert(key.to_owned(), Value::from(value.as_str())),
            None => content.remove(key),
        };
    }
}

/// Every field of the profile, as `GET /profile/{userId}` answers it.
fn all_fields(profile: &Profile) -> Map<String, Value> {
    let mut body = profile.fields.clone();
    add_to_member_content(profile, &mut body);
    body
}

/// The profile of any user: asked of their server if it is another one.
async fn any_profile(state: &AppState, user_id: &str) -> Result<Profile> {
    let user_id = parse_user_id(user_id)?;
    if user_id.server_name().as_str() == state.server_name() {
        return profile_of(state, &user_id).await;
    }
    let remote = federation::remote_profile(&state.bus, user_id).await?;
    Ok(Profile { displayname: remote.displayname, avatar_url: remote.avatar_url, fields: remote.fields })
}

/// A field name the spec allows: `displayname`, `avatar_url`, `m.tz`, or
/// a namespaced name (`[a-z][a-z0-9_]*` parts joined by dots, at least two).
fn check_key(key: &str) -> Result<(), MatrixError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(MatrixError::new(ErrorCode::KeyTooLarge, format!("Field names are at most {MAX_KEY_BYTES} bytes")));
    }
    let part = |part: &str| {
        let mut chars = part.chars();
        chars.next().is_some_and(|first| first.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let namespaced = key.contains('.') && key.split('.').all(part);
    if matches!(key, "displayname" | "avatar_url" | "m.tz") || namespaced {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(format!("Invalid profile field name {key}")))
    }
}

/// `GET /_matrix/client/v3/profile/{userId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuserid>
pub async fn get_profile(
    State(state): State<AppState>,
    MatrixPath(user_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let profile = any_profile(&state, &user_id).await?;
    Ok(Json(Value::Object(all_fields(&profile))))
}

/// `GET /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3profileuseridkeyname>
pub async fn get_field(
    State(state): State<AppState>,
    MatrixPath((user_id, key)): MatrixPath<(String, String)>,
) -> Result<Json<Value>> {
    check_key(&key)?;
    let profile = any_profile(&state, &user_id).await?;
    let value = all_fields(&profile).remove(&key).ok_or_else(|| MatrixError::not_found(format!("No {key} set")))?;
    Ok(Json(json!({ key: value })))
}

/// `PUT /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3profileuseridkeyname>
///
/// The display name and avatar are strings (`null` clears them, as before
/// the custom fields existed) and go into the user's member events; `m.tz`
/// is a string; custom fields hold any JSON, `null` included. Guests may
/// set only their display name.
pub async fn put_field(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((target, key)): MatrixPath<(String, String)>,
    MatrixJson(mut body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    check_key(&key)?;
    let value =
        body.remove(&key).ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, format!("The body has no {key}")))?;
    change_field(&state, &user, &target, &key, Some(value)).await
}

/// `DELETE /_matrix/client/v3/profile/{userId}/{keyName}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3profileuseridkeyname>
pub async fn delete_field(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath((target, key)): MatrixPath<(String, String)>,
) -> Result<Json<Value>> {
    check_key(&key)?;
    change_field(&state, &user, &target, &key, None).await
}

/// Set (`Some`) or remove (`None`) one field of the user's own profile;
/// a new display name or avatar also goes into their member events.
async fn change_field(
    state: &AppState,
    user: &AuthedUser,
    target: &str,
    key: &str,
    value: Option<Value>,
) -> Result<Json<Value>> {
    require_self(user, target, "change the profile")?;
    if user.is_guest && key != "displayname" {
        return Err(MatrixError::guest_access_forbidden().into());
    }
    let mut profile = profile_of(state, &user.user_id).await?;
    let in_member_events = matches!(key, "displayname" | "avatar_url");
    if in_member_events {
        let text = match value {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(_) => return Err(MatrixError::bad_json(format!("{key} must be a string")).into()),
        };
        if key == "displayname" {
            profile.displayname = text;
        } else {
            profile.avatar_url = text;
        }
    } else {
        match value {
            Some(value) if key == "m.tz" && !value.is_string() => {
                return Err(MatrixError::bad_json("m.tz must be a string").into());
            }
            Some(value) => profile.fields.insert(key.to_owned(), value),
            None => profile.fields.remove(key),
        };
    }
    if Value::Object(all_fields(&profile)).to_string().len() > MAX_PROFILE_BYTES {
        let error = format!("A profile is at most {MAX_PROFILE_BYTES} bytes of JSON");
        return Err(MatrixError::new(ErrorCode::ProfileTooLarge, error).into());
    }
    if !accounts::set_profile(&state.db, user.user_id.localpart(), &profile).await? {
        return Err(MatrixError::not_found("Profile not found").into());
    }
    if in_member_events {
        update_member_events(state, user, &profile).await?;
    }
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
                origin_server_ts: None,
            };
            roomserver::send_event(&state.bus, request).await.map(drop)
        };
        if let Err(error) = update.await {
            tracing::warn!(%room_id, %error, "could not update the member event for a profile change");
        }
    }
    Ok(())
}
