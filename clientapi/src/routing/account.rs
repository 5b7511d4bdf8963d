//! The caller's account: who am I, password changes and deactivation (both
//! behind the current password).

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::{self, MAX_PASSWORD_LEN};
use crate::api::UserErased;
use crate::auth::{AuthedUser, GuestOk};
use crate::error::Result;
use crate::json::{MatrixJson, OptionalJson};
use crate::producers::{self, roomserver};
use crate::routing::membership::set_membership;
use crate::service::AppState;
use crate::storage::{account_data as stored_account_data, accounts as stored_accounts, devices};
use crate::uia::{self, AuthData};

/// `GET /_matrix/client/v3/account/whoami`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3accountwhoami>
///
/// An application service acting without a device gets no `device_id`.
pub async fn whoami(GuestOk(user): GuestOk) -> Json<Value> {
    let mut reply = json!({ "user_id": user.user_id, "is_guest": user.is_guest });
    if !user.device_id.is_empty() {
        reply["device_id"] = json!(user.device_id);
    }
    Json(reply)
}

#[derive(Deserialize)]
pub struct PasswordBody {
    new_password: String,
    #[serde(default = "yes")]
    logout_devices: bool,
    auth: Option<AuthData>,
}

fn yes() -> bool {
    true
}

/// `POST /_matrix/client/v3/account/password`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountpassword>
///
/// Logging out the other devices revokes their tokens on `clientapi.devices`,
/// which also removes the pushers they set.
pub async fn change_password(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<PasswordBody>,
) -> Result<Response> {
    // Checked before authentication, so that a bad password costs no round trip.
    if body.new_password.is_empty() || body.new_password.len() > MAX_PASSWORD_LEN {
        return Err(MatrixError::invalid_param("new_password must be 1 to 512 bytes").into());
    }
    if let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    let hash = accounts::hash_password(body.new_password).await?;
    if !stored_accounts::set_password_hash(&state.db, user.user_id.localpart(), &hash).await? {
        return Err(MatrixError::forbidden("This account cannot change its password").into());
    }
    if body.logout_devices {
        let revoked = devices::end_other_sessions(&state.db, user.user_id.as_str(), &user.device_id).await?;
        producers::devices::tokens_revoked(&state.bus, &user.user_id, revoked).await?;
    }
    Ok(Json(json!({})).into_response())
}

#[derive(Deserialize, Default)]
pub struct DeactivateBody {
    auth: Option<AuthData>,
    /// Erase the account's content as far as possible (see [`UserErased`]).
    #[serde(default)]
    erase: bool,
}

/// `POST /_matrix/client/v3/account/deactivate`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountdeactivate>
///
/// The account is locked first (no password, flagged), then every token is
/// revoked, every joined room left and every pending invite rejected; a
/// room that refuses the leave is logged and skipped, the account stays
/// deactivated. Identity servers are not supported, hence `no-support`.
pub async fn deactivate(
    State(state): State<AppState>,
    user: AuthedUser,
    OptionalJson(body): OptionalJson<DeactivateBody>,
) -> Result<Response> {
    if let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    stored_accounts::deactivate(&state.db, user.user_id.localpart()).await?;
    accounts::end_all_sessions(&state, &user.user_id).await?;
    let joined = roomserver::joined_rooms(&state.bus, &user.user_id).await?;
    let invited = roomserver::invited_rooms(&state.bus, &user.user_id).await?;
    for room_id in joined.into_iter().chain(invited) {
        let left = set_membership(&state, user.user_id.clone(), room_id.clone(), &user.user_id, "leave", None).await;
        if let Err(error) = left {
            tracing::warn!(%room_id, %error, "a deactivated account could not leave a room");
        }
    }
    if body.erase {
        erase(&state, &user.user_id).await?;
    }
    Ok(Json(json!({ "id_server_unbind_result": "no-support" })).into_response())
}

/// Erase a deactivated account: its profile and account data go, and the
/// sync API serves its events redacted to whoever was not joined when they
/// were sent. Other servers are not told (the spec keeps erasure local).
async fn erase(state: &AppState, user_id: &OwnedUserId) -> Result<()> {
    let cleared = stored_accounts::Profile { displayname: None, avatar_url: None, fields: Default::default() };
    stored_accounts::set_profile(&state.db, user_id.localpart(), &cleared).await?;
    stored_account_data::delete_all(&state.db, user_id.as_str()).await?;
    producers::edu::user_erased(&state.bus, &UserErased { user_id: user_id.clone() }).await?;
    Ok(())
}
