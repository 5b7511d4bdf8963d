use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_types::ruma::{OwnedUserId, UserId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::{self, MAX_PASSWORD_LEN};
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::service::AppState;
use crate::storage;

/// `GET /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3login>
pub async fn get_login() -> Json<Value> {
    Json(json!({ "flows": [{ "type": "m.login.password" }] }))
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    login_type: String,
    identifier: Option<Identifier>,
    /// Deprecated form of `identifier: {type: m.id.user, user}`.
    user: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    /// The client can refresh: its access token expires, with a refresh token.
    #[serde(default)]
    refresh_token: bool,
}

#[derive(Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

fn bad_login() -> MatrixError {
    MatrixError::forbidden("Invalid username or password")
}

/// `POST /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3login>
pub async fn post_login(State(state): State<AppState>, MatrixJson(body): MatrixJson<LoginBody>) -> Result<Json<Value>> {
    if body.login_type != "m.login.password" {
        return Err(MatrixError::new(ErrorCode::Unknown, "Unknown login type")
            .with_status(StatusCode::BAD_REQUEST)
            .into());
    }
    let user = match (body.identifier, body.user) {
        (Some(identifier), _) if identifier.kind != "m.id.user" => {
            return Err(MatrixError::new(ErrorCode::Unknown, "Unknown login identifier type")
                .with_status(StatusCode::BAD_REQUEST)
                .into());
        }
        (Some(Identifier { user: Some(user), .. }), _) | (None, Some(user)) => user,
        _ => return Err(MatrixError::new(ErrorCode::MissingParam, "User identifier is missing").into()),
    };
    let Some(password) = body.password else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "Password is missing").into());
    };
    let localpart = if user.starts_with('@') {
        let user_id = <&UserId>::try_from(user.as_str()).map_err(|_| bad_login())?;
        if user_id.server_name().as_str() != state.server_name() {
            return Err(bad_login().into());
        }
        user_id.localpart().to_lowercase()
    } else {
        user.to_lowercase()
    };
    if password.len() > MAX_PASSWORD_LEN {
        return Err(bad_login().into());
    }
    if storage::accounts::is_deactivated(&state.db, &localpart).await? {
        return Err(MatrixError::new(ErrorCode::UserDeactivated, "This account has been deactivated").into());
    }
    let stored = storage::accounts::password_hash(&state.db, &localpart).await?.flatten();
    if !accounts::verify_password(password, stored).await? {
        return Err(bad_login().into());
    }
    let user_id = OwnedUserId::try_from(format!("@{localpart}:{}", state.server_name())).map_err(|_| bad_login())?;
    let session =
        accounts::start_session(&state, &user_id, body.device_id, body.initial_device_display_name, body.refresh_token)
            .await?;
    let mut reply = json!({ "user_id": user_id, "home_server": state.server_name() });
    session.add_to(&mut reply);
    Ok(Json(reply))
}

/// `POST /_matrix/client/v3/logout`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3logout>
pub async fn logout(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    accounts::end_session(&state, &user.user_id, &user.device_id).await?;
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/logout/all`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3logoutall>
pub async fn logout_all(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    accounts::end_all_sessions(&state, &user.user_id).await?;
    Ok(Json(json!({})))
}
