//! End-to-end encryption keys of this server's users: device keys (upload,
//! query, claim), cross-signing keys and the signatures users make over
//! keys. Each change is published on `clientapi.keychange`, from which the
//! sync API reports key counts and device list changes.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::KeyChange;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::MatrixJson;
use crate::producers;
use crate::service::AppState;
use crate::storage::keys::{self, NewKey, Signature, Stored};
use crate::uia::{self, AuthData};

/// Cross-signing keys: the request field and the stored (and `usage`) name.
const CROSS_SIGNING: [(&str, &str); 3] =
    [("master_key", "master"), ("self_signing_key", "self_signing"), ("user_signing_key", "user_signing")];

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

/// Tell those who share a room with `user_id` that the user's keys changed
/// (a cross-signing key, or a signature over one of their keys).
async fn publish_user_change(state: &AppState, user_id: &OwnedUserId) -> Result<()> {
    let change = KeyChange {
        user_id: user_id.clone(),
        device_id: String::new(),
        one_time_key_counts: BTreeMap::new(),
        unused_fallback_key_types: Vec::new(),
        device_keys_changed: true,
    };
    producers::edu::key_change(&state.bus, &change).await?;
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
    GuestOk(user): GuestOk,
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
    GuestOk(user): GuestOk,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> Result<Json<Value>> {
    let mut device_keys = Map::new();
    let mut failures = Map::new();
    let mut cross_signing: [Map<String, Value>; 3] = Default::default();
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
            keys::merge_signatures(&state.db, user_id.as_str(), &device_id, &mut keys).await?;
            by_device.insert(device_id, keys);
        }
        device_keys.insert(user_id.to_string(), Value::Object(by_device));
        for (slot, (_, key_type)) in cross_signing.iter_mut().zip(CROSS_SIGNING) {
            // A user's user-signing key is theirs alone to see.
            if key_type == "user_signing" && user_id != user.user_id {
                continue;
            }
            if let Some(mut key) = keys::cross_signing_key(&state.db, user_id.as_str(), key_type).await? {
                if let Some(public) = public_key_of(&key) {
                    keys::merge_signatures(&state.db, user_id.as_str(), &public, &mut key).await?;
                }
                slot.insert(user_id.to_string(), key);
            }
        }
    }
    let [master_keys, self_signing_keys, user_signing_keys] = cross_signing;
    Ok(Json(json!({
        "device_keys": device_keys,
        "failures": failures,
        "master_keys": master_keys,
        "self_signing_keys": self_signing_keys,
        "user_signing_keys": user_signing_keys,
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
    GuestOk(_user): GuestOk,
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

/// The public key of a cross-signing key (its one `keys` entry), which
/// names it in signature uploads.
fn public_key_of(key: &Value) -> Option<String> {
    key["keys"].as_object()?.values().next()?.as_str().map(str::to_owned)
}

/// A cross-signing key must be the caller's, for `usage`, with one ed25519 key.
fn check_cross_signing_key(key: &Value, user: &AuthedUser, usage: &str) -> Result<(), MatrixError> {
    let invalid = |why: &str| MatrixError::invalid_param(format!("Invalid {usage} key: {why}"));
    if key["user_id"] != user.user_id.as_str() {
        return Err(invalid("user_id must be the uploader"));
    }
    if !key["usage"].as_array().is_some_and(|usages| usages.iter().any(|u| u == usage)) {
        return Err(invalid("usage must include it"));
    }
    match key["keys"].as_object() {
        Some(keys) if keys.len() == 1 && keys.iter().all(|(id, k)| id.starts_with("ed25519:") && k.is_string()) => {
            Ok(())
        }
        _ => Err(invalid("keys must hold exactly one ed25519 key")),
    }
}

#[derive(Deserialize)]
pub struct DeviceSigningBody {
    master_key: Option<Value>,
    self_signing_key: Option<Value>,
    user_signing_key: Option<Value>,
    auth: Option<AuthData>,
}

/// `POST /_matrix/client/v3/keys/device_signing/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keysdevice_signingupload>
///
/// The first upload needs no password (as clients set up cross-signing
/// right after registering); replacing keys the user already has does.
/// Signatures inside the keys are stored as uploaded, not verified.
pub async fn upload_cross_signing(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<DeviceSigningBody>,
) -> Result<Response> {
    let given = [&body.master_key, &body.self_signing_key, &body.user_signing_key];
    let mut uploads = Vec::new();
    for (key, (_, key_type)) in given.into_iter().zip(CROSS_SIGNING) {
        if let Some(key) = key {
            check_cross_signing_key(key, &user, key_type)?;
            uploads.push((key_type, key));
        }
    }
    let mut replaces = false;
    for (key_type, key) in &uploads {
        let stored = keys::cross_signing_key(&state.db, user.user_id.as_str(), key_type).await?;
        replaces |= stored.is_some_and(|stored| stored != **key);
    }
    if replaces && let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    keys::put_cross_signing_keys(&state.db, user.user_id.as_str(), &uploads).await?;
    publish_user_change(&state, &user.user_id).await?;
    Ok(Json(json!({})).into_response())
}

/// `POST /_matrix/client/v3/keys/signatures/upload`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3keyssignaturesupload>
///
/// Each entry is a key (a device's, by device id, or a cross-signing key,
/// by its public key) carrying the caller's signatures; those are stored
/// and appear in `/keys/query`. An entry without them is reported in
/// `failures`. Signatures are stored as uploaded, not verified.
pub async fn upload_signatures(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<Map<String, Value>>,
) -> Result<Json<Value>> {
    let mut signatures: Vec<Signature> = Vec::new();
    let mut failures = Map::new();
    let mut targets = Vec::new();
    for (target_user, signed_keys) in &body {
        let target = parse_user(target_user)?;
        let signed_keys =
            signed_keys.as_object().ok_or_else(|| MatrixError::bad_json(format!("{target_user} must map keys")))?;
        for (target_key, signed) in signed_keys {
            let mine = signed["signatures"][user.user_id.as_str()].as_object().filter(|s| !s.is_empty());
            let Some(mine) = mine else {
                let failure = json!({ "errcode": "M_INVALID_SIGNATURE", "error": "No signature by the uploader" });
                failures.entry(target_user.clone()).or_insert_with(|| json!({}))[target_key] = failure;
                continue;
            };
            for (key_id, signature) in mine {
                let signature =
                    signature.as_str().ok_or_else(|| MatrixError::bad_json("signatures must be strings"))?;
                signatures.push((
                    target_user.clone(),
                    target_key.clone(),
                    user.user_id.to_string(),
                    key_id.clone(),
                    signature.to_owned(),
                ));
            }
            targets.push(target.clone());
        }
    }
    keys::put_signatures(&state.db, &signatures).await?;
    targets.dedup();
    for target in targets.iter().filter(|t| t.server_name() == state.server_name()) {
        publish_user_change(&state, target).await?;
    }
    Ok(Json(json!({ "failures": failures })))
}
