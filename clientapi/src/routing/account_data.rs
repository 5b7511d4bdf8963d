//! Account data, global and per room, and room tags (the room account data
//! entry `m.tag`). Each change is stored, then published on
//! `clientapi.accountdata` for `/sync`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_types::ruma::OwnedRoomId;
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Map, Value, json};

use crate::api::AccountDataUpdate;
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::producers;
use crate::routing::{parse_room_id, require_self};
use crate::service::AppState;
use crate::storage::account_data;

/// Types the server maintains itself: `m.fully_read` moves with
/// `/read_markers`, `m.push_rules` with the push rules API.
const SERVER_CONTROLLED: &[&str] = &["m.fully_read", "m.push_rules"];

const TAG: &str = "m.tag";

/// Store `content` and publish it. Shared with `/read_markers`, which sets `m.fully_read`.
pub(crate) async fn set(
    state: &AppState,
    user: &AuthedUser,
    room_id: Option<OwnedRoomId>,
    data_type: &str,
    content: Value,
) -> Result<()> {
    let room = room_id.as_ref().map(|r| r.as_str());
    account_data::put(&state.db, user.user_id.as_str(), room, data_type, &content).await?;
    let update = AccountDataUpdate { user_id: user.user_id.clone(), room_id, data_type: data_type.to_owned(), content };
    producers::edu::account_data(&state.bus, &update).await?;
    Ok(())
}

async fn get(
    state: &AppState,
    user: &AuthedUser,
    target: &str,
    room_id: Option<&str>,
    data_type: &str,
) -> Result<Value> {
    require_self(user, target, "read account data")?;
    let room_id = room_id.map(parse_room_id).transpose()?;
    account_data::get(&state.db, user.user_id.as_str(), room_id.as_ref().map(|r| r.as_str()), data_type)
        .await?
        .ok_or_else(|| MatrixError::not_found("Account data not found").into())
}

async fn put(
    state: &AppState,
    user: &AuthedUser,
    target: &str,
    room_id: Option<&str>,
    data_type: &str,
    content: Map<String, Value>,
) -> Result<Json<Value>> {
    require_self(user, target, "set account data")?;
    let room_id = room_id.map(parse_room_id).transpose()?;
    if SERVER_CONTROLLED.contains(&data_type) {
        return Err(MatrixError::new(ErrorCode::BadJson, format!("Cannot set {data_type} through this API"))
            .with_status(StatusCode::METHOD_NOT_ALLOWED)
            .into());
    }
    set(state, user, room_id, data_type, Value::Object(content)).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridaccount_datatype>
pub async fn get_global(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, data_type)): MatrixPath<(String, String)>,
) -> Result<Json<Value>> {
    Ok(Json(get(&state, &user, &target, None, &data_type).await?))
}

/// `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3useruseridaccount_datatype>
pub async fn put_global(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, data_type)): MatrixPath<(String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    put(&state, &user, &target, None, &data_type, content).await
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridroomsroomidaccount_datatype>
pub async fn get_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, room_id, data_type)): MatrixPath<(String, String, String)>,
) -> Result<Json<Value>> {
    Ok(Json(get(&state, &user, &target, Some(&room_id), &data_type).await?))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3useruseridroomsroomidaccount_datatype>
pub async fn put_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, room_id, data_type)): MatrixPath<(String, String, String)>,
    MatrixJson(content): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    put(&state, &user, &target, Some(&room_id), &data_type, content).await
}

/// The room's `m.tag` content's `tags` object (empty when never set).
async fn tags(state: &AppState, user: &AuthedUser, room_id: &OwnedRoomId) -> Result<Map<String, Value>> {
    let content = account_data::get(&state.db, user.user_id.as_str(), Some(room_id.as_str()), TAG).await?;
    Ok(content
        .and_then(|mut c| c.get_mut("tags").map(Value::take))
        .and_then(|t| match t {
            Value::Object(tags) => Some(tags),
            _ => None,
        })
        .unwrap_or_default())
}

/// `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridroomsroomidtags>
pub async fn get_tags(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, room_id)): MatrixPath<(String, String)>,
) -> Result<Json<Value>> {
    require_self(&user, &target, "read tags")?;
    let room_id = parse_room_id(&room_id)?;
    Ok(Json(json!({ "tags": tags(&state, &user, &room_id).await? })))
}

/// `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3useruseridroomsroomidtagstag>
pub async fn put_tag(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, room_id, tag)): MatrixPath<(String, String, String)>,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    require_self(&user, &target, "set tags")?;
    let room_id = parse_room_id(&room_id)?;
    if body.get("order").is_some_and(|order| !order.is_number()) {
        return Err(MatrixError::bad_json("order must be a number").into());
    }
    let mut all = tags(&state, &user, &room_id).await?;
    all.insert(tag, Value::Object(body));
    set(&state, &user, Some(room_id), TAG, json!({ "tags": all })).await?;
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3useruseridroomsroomidtagstag>
pub async fn delete_tag(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((target, room_id, tag)): MatrixPath<(String, String, String)>,
) -> Result<Json<Value>> {
    require_self(&user, &target, "remove tags")?;
    let room_id = parse_room_id(&room_id)?;
    let mut all = tags(&state, &user, &room_id).await?;
    if all.remove(&tag).is_some() {
        set(&state, &user, Some(room_id), TAG, json!({ "tags": all })).await?;
    }
    Ok(Json(json!({})))
}
