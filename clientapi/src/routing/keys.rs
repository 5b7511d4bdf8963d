//! End-to-end encryption keys of this server's devices: upload, query and
//! claim. Each change is published on `clientapi.keychange`, from which the
//! sync API reports key counts and device list changes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::KeyChange;
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::producers;
use crate::service::AppState;
use crate::storage::keys::{self, NewKey, Stored};

#[derive(Deserialize)]
pub struct UploadBody {
    device_keys: Option<Value>,
    #[serde(default)]
    one_time_keys: Map<String, Value>,
    #[serde(default)]
    fallback_keys: Map<String, Value>,
}

/// `algorithm:key_id` names of one-time and fallback keys, split.
fn parse_keys(keys: &Map<String, Value>) -> Result<Vec<NewKey<'_>>, MatrixError> {
    keys.iter()
        .map(|(name, json)| {
            let (algorithm, key_id) = name
                .split_once(':')
                .filter(|(algorithm, key_id)| !algorithm.is_empty() && !key_id.is_empty())
                .ok_or_else(|| MatrixError::invalid_param(format!("Key name {name:?} is not algorithm:key_id")))?;
            Ok(NewKey { algorithm, key_id, json })
        })
        .collect()
}

/// Device keys must be the caller's own device's, with the fields clients rely on.
fn check_device_keys(keys: &Value, user: &AuthedUser) -> Result<(), MatrixError> {
    if keys["user_id"] != user.user_id.as_str() || keys["device_id"] != user.device_id.as_str() {
        return Err(MatrixError::invalid_param("device_keys must be for the device making the request"));
    }
    if !keys["algorithms"].is_array() || !keys["keys"].is_object() || !keys["signatures"].is_object() {
        return Err(MatrixError::bad_json("device_keys needs algorithms, keys and signatures"));
    }
    Ok(())
}

/// Publish the device's key state after a change.
async fn publish(
    state: &AppState,
    user_id: &OwnedUserId,
    device_id: &str,
    device_keys_changed: bool,
) -> Result<KeyChange> {
    let change = KeyChange {
        user_id: user_id.clone(),
        device_id: device_id.to_owned(),
        one_time_key_counts: keys::one_time_key_counts(&state.db, user_id.as_str(), device_id).await?,
        unused_fallback_key_types: keys::unused_fallback_key_types(&state.db, user_id.as_str(), device_id).await?,
        device_keys_changed,
    };
    producers::edu::key_change(&state.bus, &change).await?;
    Ok(change)
}

/// `POST /_matrix/client/v3/keys/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysupload>
pub async fn upload(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<UploadBody>,
) -> Result<Json<Value>> {
    if let Some(device_keys) = &body.device_keys {
        check_device_keys(device_keys, &user)?;
    }
    let one_time_keys = parse_keys(&body.one_time_keys)?;
    let fallback_keys = parse_keys(&body.fallback_keys)?;
    let stored = keys::upload(
        &state.db,
        user.user_id.as_str(),
        &user.device_id,
        body.device_keys.as_ref(),
        &one_time_keys,
        &fallback_keys,
    )
    .await?;
    if let Stored::ConflictingOneTimeKey(name) = stored {
        return Err(MatrixError::invalid_param(format!("One-time key {name} already exists with other content")).into());
    }
    let change = publish(&state, &user.user_id, &user.device_id, body.device_keys.is_some()).await?;
    Ok(Json(json!({ "one_time_key_counts": change.one_time_key_counts })))
}

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<String, Vec<String>>,
}

fn parse_user(user_id: &str) -> Result<OwnedUserId, MatrixError> {
    OwnedUserId::try_from(user_id).map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))
}

/// Users of other servers cannot be asked yet (no outbound key queries).
fn remote_failure() -> Value {
    json!({ "status": 503, "message": "Key queries to other servers are not supported yet" })
}

/// `POST /_matrix/client/v3/keys/query`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysquery>
///
/// An empty device list asks for every device of the user.
pub async fn query(
    State(state): State<AppState>,
    _user: AuthedUser,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> Result<Json<Value>> {
    let mut device_keys = Map::new();
    let mut failures = Map::new();
    for (user_id, devices) in &body.device_keys {
        let user_id = parse_user(user_id)?;
        if user_id.server_name() != state.server_name() {
            failures.insert(user_id.server_name().to_string(), remote_failure());
            continue;
        }
        let mut by_device = Map::new();
        for (device_id, mut keys, display_name) in keys::device_keys(&state.db, user_id.as_str(), devices).await? {
            if let Some(name) = display_name {
                keys["unsigned"]["device_display_name"] = Value::String(name);
            }
            by_device.insert(device_id, keys);
        }
        device_keys.insert(user_id.to_string(), Value::Object(by_device));
    }
    Ok(Json(json!({
        "device_keys": device_keys,
        "failures": failures,
        "master_keys": {},
        "self_signing_keys": {},
        "user_signing_keys": {},
    })))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<String, BTreeMap<String, String>>,
}

/// `POST /_matrix/client/v3/keys/claim`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysclaim>
pub async fn claim(
    State(state): State<AppState>,
    _user: AuthedUser,
    MatrixJson(body): MatrixJson<ClaimBody>,
) -> Result<Json<Value>> {
    let mut claimed = Map::new();
    let mut failures = Map::new();
    for (user_id, devices) in &body.one_time_keys {
        let user_id = parse_user(user_id)?;
        if user_id.server_name() != state.server_name() {
            failures.insert(user_id.server_name().to_string(), remote_failure());
            continue;
        }
        let mut by_device = Map::new();
        for (device_id, algorithm) in devices {
            if let Some((name, key)) = keys::claim(&state.db, user_id.as_str(), device_id, algorithm).await? {
                by_device.insert(device_id.clone(), json!({ name: key }));
                publish(&state, &user_id, device_id, false).await?;
            }
        }
        if !by_device.is_empty() {
            claimed.insert(user_id.to_string(), Value::Object(by_device));
        }
    }
    Ok(Json(json!({ "one_time_keys": claimed, "failures": failures })))
}
