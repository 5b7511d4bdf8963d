//! Server-side key backups (`/room_keys`): versions with the client's
//! `auth_data`, and the encrypted room keys, which the server keeps
//! without reading except to prefer the better copy of a session.

use axum::Json;
use axum::extract::State;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, MatrixQuery};
use crate::service::AppState;
use crate::storage::backup::{self, Scope, Version};

#[derive(Deserialize)]
pub struct VersionBody {
    algorithm: String,
    auth_data: Value,
    version: Option<String>,
}

#[derive(Deserialize)]
pub struct VersionQuery {
    version: Option<String>,
}

/// The one backup algorithm the spec defines; a backup of another kind
/// could not be described in `GET /room_keys/version` as the spec requires.
const BACKUP_ALGORITHM: &str = "m.megolm_backup.v1.curve25519-aes-sha2";

fn no_backup() -> MatrixError {
    MatrixError::not_found("No backup version found")
}

fn parse_version(version: &str) -> Result<i64, MatrixError> {
    version.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(no_backup)
}

fn describe(version: &Version, count: i64) -> Value {
    json!({
        "algorithm": version.algorithm,
        "auth_data": version.auth_data,
        "count": count,
        "etag": version.etag.to_string(),
        "version": version.version.to_string(),
    })
}

/// `POST /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3room_keysversion>
pub async fn create_version(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<VersionBody>,
) -> Result<Json<Value>> {
    if !body.auth_data.is_object() {
        return Err(MatrixError::bad_json("auth_data must be an object").into());
    }
    if body.algorithm != BACKUP_ALGORITHM {
        return Err(MatrixError::invalid_param(format!("Unsupported backup algorithm; use {BACKUP_ALGORITHM}")).into());
    }
    let version = backup::create_version(&state.db, user.user_id.as_str(), &body.algorithm, &body.auth_data).await?;
    Ok(Json(json!({ "version": version.to_string() })))
}

async fn get_version(state: &AppState, user: &AuthedUser, version: Option<i64>) -> Result<Json<Value>> {
    let found = backup::version(&state.db, user.user_id.as_str(), version).await?.ok_or_else(no_backup)?;
    let count = backup::count(&state.db, user.user_id.as_str(), found.version).await?;
    Ok(Json(describe(&found, count)))
}

/// `GET /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keysversion>
pub async fn current_version(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    get_version(&state, &user, None).await
}

/// `GET /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keysversionversion>
pub async fn version(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(version): MatrixPath<String>,
) -> Result<Json<Value>> {
    get_version(&state, &user, Some(parse_version(&version)?)).await
}

/// `PUT /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3room_keysversionversion>
///
/// Only `auth_data` changes; the algorithm stays what it was.
pub async fn update_version(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(version): MatrixPath<String>,
    MatrixJson(body): MatrixJson<VersionBody>,
) -> Result<Json<Value>> {
    let number = parse_version(&version)?;
    if body.version.as_deref().is_some_and(|v| v != version) {
        return Err(MatrixError::invalid_param("The version in the body differs from the path").into());
    }
    let found = backup::version(&state.db, user.user_id.as_str(), Some(number)).await?.ok_or_else(no_backup)?;
    if found.algorithm != body.algorithm {
        return Err(MatrixError::invalid_param("A backup's algorithm cannot change").into());
    }
    if !backup::update_version(&state.db, user.user_id.as_str(), number, &body.auth_data).await? {
        return Err(no_backup().into());
    }
    Ok(Json(json!({})))
}

/// `DELETE /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3room_keysversionversion>
pub async fn delete_version(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(version): MatrixPath<String>,
) -> Result<Json<Value>> {
    if !backup::delete_version(&state.db, user.user_id.as_str(), parse_version(&version)?).await? {
        return Err(no_backup().into());
    }
    Ok(Json(json!({})))
}

/// The version a keys request names: it must exist; writes must go to the
/// current one.
async fn keys_version(state: &AppState, user: &AuthedUser, query: &VersionQuery, write: bool) -> Result<Version> {
    let asked = query
        .version
        .as_deref()
        .ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, "The version parameter is required"))?;
    let asked = parse_version(asked)?;
    let current = backup::version(&state.db, user.user_id.as_str(), None).await?;
    match current {
        Some(current) if write && current.version != asked => Err(MatrixError::new(
            ErrorCode::WrongRoomKeysVersion,
            format!("The current backup version is {}", current.version),
        )
        .into()),
        _ => Ok(backup::version(&state.db, user.user_id.as_str(), Some(asked)).await?.ok_or_else(no_backup)?),
    }
}

/// Session key data must be an object with the fields the server compares.
fn check_key_data(data: &Value) -> Result<(), MatrixError> {
    let ok = data["first_message_index"].is_u64()
        && data["forwarded_count"].is_u64()
        && data["is_verified"].is_boolean()
        && data["session_data"].is_object();
    if ok {
        Ok(())
    } else {
        Err(MatrixError::bad_json("Key data needs first_message_index, forwarded_count, is_verified and session_data"))
    }
}

fn sessions_of(room_id: &str, sessions: &Value) -> Result<Vec<(String, String, Value)>, MatrixError> {
    let sessions =
        sessions["sessions"].as_object().ok_or_else(|| MatrixError::bad_json("sessions must be an object"))?;
    sessions
        .iter()
        .map(|(session_id, data)| {
            check_key_data(data)?;
            Ok((room_id.to_owned(), session_id.clone(), data.clone()))
        })
        .collect()
}

async fn store(
    state: &AppState,
    user: &AuthedUser,
    query: &VersionQuery,
    keys: Vec<(String, String, Value)>,
) -> Result<Json<Value>> {
    let version = keys_version(state, user, query, true).await?;
    let count = backup::put_keys(&state.db, user.user_id.as_str(), version.version, &keys).await?;
    let etag = backup::version(&state.db, user.user_id.as_str(), Some(version.version)).await?.map_or(0, |v| v.etag);
    Ok(Json(json!({ "count": count, "etag": etag.to_string() })))
}

/// `PUT /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3room_keyskeys>
pub async fn put_all(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> Result<Json<Value>> {
    let rooms = body["rooms"].as_object().ok_or_else(|| MatrixError::bad_json("rooms must be an object"))?;
    let mut keys = Vec::new();
    for (room_id, sessions) in rooms {
        keys.extend(sessions_of(room_id, sessions)?);
    }
    store(&state, &user, &query, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3room_keyskeysroomid>
pub async fn put_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> Result<Json<Value>> {
    let keys = sessions_of(&room_id, &body)?;
    store(&state, &user, &query, keys).await
}

/// `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid>
pub async fn put_session(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<Value>,
) -> Result<Json<Value>> {
    check_key_data(&body)?;
    store(&state, &user, &query, vec![(room_id, session_id, body)]).await
}

fn by_room(keys: Vec<(String, String, Value)>) -> Map<String, Value> {
    let mut rooms = Map::new();
    for (room_id, session_id, data) in keys {
        rooms.entry(room_id).or_insert_with(|| json!({ "sessions": {} }))["sessions"][session_id] = data;
    }
    rooms
}

/// `GET /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keyskeys>
pub async fn get_all(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    let version = keys_version(&state, &user, &query, false).await?;
    let keys = backup::keys(&state.db, user.user_id.as_str(), version.version, Scope::All).await?;
    Ok(Json(json!({ "rooms": by_room(keys) })))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keyskeysroomid>
pub async fn get_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    let version = keys_version(&state, &user, &query, false).await?;
    let keys = backup::keys(&state.db, user.user_id.as_str(), version.version, Scope::Room(&room_id)).await?;
    let room = by_room(keys).remove(&room_id).unwrap_or_else(|| json!({ "sessions": {} }));
    Ok(Json(room))
}

/// `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3room_keyskeysroomidsessionid>
pub async fn get_session(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    let version = keys_version(&state, &user, &query, false).await?;
    let scope = Scope::Session(&room_id, &session_id);
    let mut keys = backup::keys(&state.db, user.user_id.as_str(), version.version, scope).await?;
    let (_, _, data) = keys.pop().ok_or_else(|| MatrixError::not_found("No key for this session"))?;
    Ok(Json(data))
}

async fn delete(state: &AppState, user: &AuthedUser, query: &VersionQuery, scope: Scope<'_>) -> Result<Json<Value>> {
    let version = keys_version(state, user, query, false).await?;
    backup::delete_keys(&state.db, user.user_id.as_str(), version.version, scope).await?;
    let count = backup::count(&state.db, user.user_id.as_str(), version.version).await?;
    let etag = backup::version(&state.db, user.user_id.as_str(), Some(version.version)).await?.map_or(0, |v| v.etag);
    Ok(Json(json!({ "count": count, "etag": etag.to_string() })))
}

/// `DELETE /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3room_keyskeys>
pub async fn delete_all(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    delete(&state, &user, &query, Scope::All).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3room_keyskeysroomid>
pub async fn delete_room(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    delete(&state, &user, &query, Scope::Room(&room_id)).await
}

/// `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3room_keyskeysroomidsessionid>
pub async fn delete_session(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath((room_id, session_id)): MatrixPath<(String, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> Result<Json<Value>> {
    delete(&state, &user, &query, Scope::Session(&room_id, &session_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verified: bool, index: u64, forwards: u64) -> Value {
        json!({"is_verified": verified, "first_message_index": index, "forwarded_count": forwards, "session_data": {}})
    }

    #[test]
    fn the_better_copy_of_a_session_wins() {
        assert!(backup::is_better(&key(true, 9, 9), &key(false, 0, 0)));
        assert!(backup::is_better(&key(false, 1, 9), &key(false, 2, 0)));
        assert!(backup::is_better(&key(false, 1, 0), &key(false, 1, 1)));
        assert!(!backup::is_better(&key(false, 1, 1), &key(false, 1, 1)));
        assert!(!backup::is_better(&key(false, 0, 0), &key(true, 5, 5)));
    }
}
