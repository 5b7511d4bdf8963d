//! `/user/devices`, `/user/keys/query` and `/user/keys/claim`: this
//! server's users' devices and end-to-end keys, asked of the client API,
//! which owns them (`clientapi.keys`). Only our own users may be named.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#device-management>,
//! <https://spec.matrix.org/v1.16/server-server-api/#end-to-end-encryption>

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use myelin_clientapi::api::{LOCAL_KEYS_TOPIC, LocalDevices, LocalKeysReply, LocalKeysRequest};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedServerName, OwnedUserId};
use serde::Deserialize;
use serde_json::{Value, json};

use super::FederationState;
use super::auth::{Origin, Signed};
use crate::storage::device_lists;

/// The users of a request, all of whom must be ours.
fn ours<T>(state: &FederationState, users: &BTreeMap<OwnedUserId, T>) -> Result<(), MatrixError> {
    match users.keys().find(|user_id| user_id.server_name().as_str() != state.keys.server_name()) {
        Some(user_id) => Err(MatrixError::invalid_param(format!("{user_id} is not a user of this server"))),
        None => Ok(()),
    }
}

async fn ask_client_api(
    state: &FederationState,
    origin: &OwnedServerName,
    request: &LocalKeysRequest,
) -> Result<LocalKeysReply, MatrixError> {
    state.bus.request_json(LOCAL_KEYS_TOPIC, origin.as_str(), request, REQUEST_TIMEOUT).await.map_err(|error| {
        tracing::warn!(%error, "the client API did not answer a keys request");
        MatrixError::internal()
    })
}

/// GET /_matrix/federation/v1/user/devices/{userId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1userdevicesuserid>
///
/// `stream_id` is that of the last `m.device_list_update` this server sent
/// about the user, so the asker can tell which updates it has seen.
/// Devices that never uploaded keys are left out (`keys` is required).
pub(super) async fn get_user_devices(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(user_id): Path<String>,
) -> Result<Json<Value>, MatrixError> {
    let user_id = OwnedUserId::try_from(user_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))?;
    ours(&state, &BTreeMap::from([(user_id.clone(), ())]))?;
    let reply = ask_client_api(&state, &origin, &LocalKeysRequest::Devices { user_id: user_id.clone() }).await?;
    let local: LocalDevices = serde_json::from_value(reply).map_err(|error| {
        tracing::error!(%error, "the client API answered devices in another shape");
        MatrixError::internal()
    })?;
    let stream_id = device_lists::stream_id(&state.db, user_id.as_str()).await.map_err(|error| {
        tracing::warn!(%error, "reading a device list stream id failed");
        MatrixError::internal()
    })?;
    let devices: Vec<Value> = local.devices.into_iter().filter(|device| device.get("keys").is_some()).collect();
    let mut answer = json!({ "user_id": user_id, "stream_id": stream_id, "devices": devices });
    if let Some(key) = local.master_key {
        answer["master_key"] = key;
    }
    if let Some(key) = local.self_signing_key {
        answer["self_signing_key"] = key;
    }
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub(super) struct QueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<String>>,
}

/// POST /_matrix/federation/v1/user/keys/query
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1userkeysquery>
pub(super) async fn post_keys_query(
    State(state): State<FederationState>,
    Signed { origin, body }: Signed<QueryBody>,
) -> Result<Json<Value>, MatrixError> {
    ours(&state, &body.device_keys)?;
    let request = LocalKeysRequest::Query { device_keys: body.device_keys };
    Ok(Json(ask_client_api(&state, &origin, &request).await?))
}

#[derive(Deserialize)]
pub(super) struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>>,
}

/// POST /_matrix/federation/v1/user/keys/claim
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1userkeysclaim>
pub(super) async fn post_keys_claim(
    State(state): State<FederationState>,
    Signed { origin, body }: Signed<ClaimBody>,
) -> Result<Json<Value>, MatrixError> {
    ours(&state, &body.one_time_keys)?;
    let request = LocalKeysRequest::Claim { one_time_keys: body.one_time_keys };
    Ok(Json(ask_client_api(&state, &origin, &request).await?))
}
