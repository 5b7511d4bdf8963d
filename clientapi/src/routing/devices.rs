//! The caller's devices: list, rename, and delete (behind the password,
//! since deleting a device logs it out).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, OptionalJson};
use crate::service::AppState;
use crate::storage::devices::{self, Device};
use crate::uia::{self, AuthData};

/// `display_name` is absent, not null, when the device has none (the spec's schema).
fn to_json(device: &Device) -> Value {
    let mut json = json!({ "device_id": device.device_id });
    if let Some(name) = &device.display_name {
        json["display_name"] = json!(name);
    }
    json
}

/// `GET /_matrix/client/v3/devices`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3devices>
pub async fn list(State(state): State<AppState>, GuestOk(user): GuestOk) -> Result<Json<Value>> {
    let devices = devices::list(&state.db, user.user_id.as_str()).await?;
    Ok(Json(json!({ "devices": devices.iter().map(to_json).collect::<Vec<_>>() })))
}

/// `GET /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3devicesdeviceid>
pub async fn get(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(device_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let device = devices::get(&state.db, user.user_id.as_str(), &device_id).await?.ok_or_else(no_such_device)?;
    Ok(Json(to_json(&device)))
}

fn no_such_device() -> MatrixError {
    MatrixError::not_found("No such device")
}

#[derive(Deserialize)]
pub struct RenameBody {
    display_name: Option<String>,
}

/// `PUT /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3devicesdeviceid>
///
/// Without `display_name` nothing changes; devices are created only by logins.
pub async fn rename(
    State(state): State<AppState>,
    GuestOk(user): GuestOk,
    MatrixPath(device_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<RenameBody>,
) -> Result<Json<Value>> {
    let found = match body.display_name {
        Some(name) => devices::set_display_name(&state.db, user.user_id.as_str(), &device_id, Some(&name)).await?,
        None => devices::get(&state.db, user.user_id.as_str(), &device_id).await?.is_some(),
    };
    if !found {
        return Err(no_such_device().into());
    }
    // Other servers show the display name with the device's keys.
    crate::keys::publish(&state.db, &state.bus, &user.user_id, &device_id, true).await?;
    Ok(Json(json!({})))
}

#[derive(Deserialize, Default)]
pub struct DeleteBody {
    auth: Option<AuthData>,
}

/// `DELETE /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3devicesdeviceid>
///
/// A device the caller does not have (another user's, or one already
/// deleted) is reported deleted, as the spec says, and nothing happens.
pub async fn delete(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(device_id): MatrixPath<String>,
    OptionalJson(body): OptionalJson<DeleteBody>,
) -> Result<Response> {
    if let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    accounts::end_session(&state, &user.user_id, &device_id).await?;
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize)]
pub struct DeleteManyBody {
    devices: Vec<String>,
    auth: Option<AuthData>,
}

/// `POST /_matrix/client/v3/delete_devices`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3delete_devices>
pub async fn delete_many(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<DeleteManyBody>,
) -> Result<Response> {
    if let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    for device_id in &body.devices {
        accounts::end_session(&state, &user.user_id, device_id).await?;
    }
    Ok(Json(json!({})).into_response())
}
