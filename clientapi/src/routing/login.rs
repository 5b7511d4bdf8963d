use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use myelin_config::appservice::AppService;
use myelin_types::ruma::{OwnedUserId, UserId};
use myelin_types::{ErrorCode, MatrixError, random};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::{self, MAX_PASSWORD_LEN};
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::service::AppState;
use crate::storage;
use crate::storage::login_tokens;
use crate::uia::{self, AuthData};

/// How long a login token from `/login/get_token` is valid (as Synapse).
const LOGIN_TOKEN_LIFETIME_MS: i64 = 2 * 60 * 1000;

/// `GET /_matrix/client/v3/login`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3login>
pub async fn get_login(State(state): State<AppState>) -> Json<Value> {
    let mut flows = vec![json!({ "type": "m.login.password" })];
    if !state.app_services.is_empty() {
        flows.push(json!({ "type": "m.login.application_service" }));
    }
    if state.config.client_api.login_via_existing_session {
        flows.push(json!({ "type": "m.login.token", "get_login_token": true }));
    }
    Json(json!({ "flows": flows }))
}

/// `POST /_matrix/client/v1/login/get_token`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv1loginget_token>
///
/// Behind the password stage of user-interactive authentication, and only
/// where the operator enabled `client_api.login_via_existing_session`.
pub async fn get_token(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<GetTokenBody>,
) -> Result<Response> {
    if !state.config.client_api.login_via_existing_session {
        return Err(MatrixError::new(ErrorCode::Unrecognized, "Login tokens are not enabled on this server").into());
    }
    if let Some(challenge) = uia::require_password(&state, &user, body.auth).await? {
        return Ok(challenge);
    }
    let token = random::alphanumeric(32);
    let now = state.now_ms();
    let expires = now + LOGIN_TOKEN_LIFETIME_MS;
    login_tokens::insert(&state.db, &random::token_hash(&token), user.user_id.as_str(), now, expires).await?;
    Ok(Json(json!({ "login_token": token, "expires_in_ms": LOGIN_TOKEN_LIFETIME_MS })).into_response())
}

#[derive(Deserialize)]
pub struct GetTokenBody {
    auth: Option<AuthData>,
}

#[derive(Deserialize)]
pub struct LoginBody {
    #[serde(rename = "type")]
    login_type: String,
    identifier: Option<Identifier>,
    /// Deprecated form of `identifier: {type: m.id.user, user}`.
    user: Option<String>,
    password: Option<String>,
    /// `m.login.token`: a token from `/login/get_token`.
    token: Option<String>,
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
pub async fn post_login(
    State(state): State<AppState>,
    parts: Parts,
    MatrixJson(body): MatrixJson<LoginBody>,
) -> Result<Json<Value>> {
    let user_id = match body.login_type.as_str() {
        "m.login.password" => password_login(&state, &body).await?,
        "m.login.token" => token_login(&state, body.token.as_deref()).await?,
        "m.login.application_service" => app_service_login(&state, &parts, &body).await?,
        _ => {
            return Err(MatrixError::new(ErrorCode::Unknown, "Unknown login type")
                .with_status(StatusCode::BAD_REQUEST)
                .into());
        }
    };
    let session =
        accounts::start_session(&state, &user_id, body.device_id, body.initial_device_display_name, body.refresh_token)
            .await?;
    let mut reply = json!({ "user_id": user_id, "home_server": state.server_name() });
    session.add_to(&mut reply);
    Ok(Json(reply))
}

/// The local user the body identifies, by localpart.
fn identified_localpart(state: &AppState, body: &LoginBody) -> Result<String> {
    let user = match (&body.identifier, &body.user) {
        (Some(identifier), _) if identifier.kind != "m.id.user" => {
            return Err(MatrixError::new(ErrorCode::Unknown, "Unknown login identifier type")
                .with_status(StatusCode::BAD_REQUEST)
                .into());
        }
        (Some(Identifier { user: Some(user), .. }), _) | (None, Some(user)) => user,
        _ => return Err(MatrixError::new(ErrorCode::MissingParam, "User identifier is missing").into()),
    };
    if !user.starts_with('@') {
        return Ok(user.to_lowercase());
    }
    let user_id = <&UserId>::try_from(user.as_str()).map_err(|_| bad_login())?;
    if user_id.server_name().as_str() != state.server_name() {
        return Err(bad_login().into());
    }
    Ok(user_id.localpart().to_lowercase())
}

/// The user whose password the body holds.
async fn password_login(state: &AppState, body: &LoginBody) -> Result<OwnedUserId> {
    let localpart = identified_localpart(state, body)?;
    let Some(password) = body.password.clone() else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "Password is missing").into());
    };
    if password.len() > MAX_PASSWORD_LEN {
        return Err(bad_login().into());
    }
    refuse_deactivated(state, &localpart).await?;
    let stored = storage::accounts::password_hash(&state.db, &localpart).await?.flatten();
    if !accounts::verify_password(password, stored).await? {
        return Err(bad_login().into());
    }
    OwnedUserId::try_from(format!("@{localpart}:{}", state.server_name())).map_err(|_| bad_login().into())
}

/// A user of the namespaces of the application service whose `as_token`
/// the request carries: `401` without a valid one, `400 M_EXCLUSIVE` for a
/// user outside its namespaces.
///
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#server-admin-style-permissions>
async fn app_service_login(state: &AppState, parts: &Parts, body: &LoginBody) -> Result<OwnedUserId> {
    let service = app_service_of(state, parts)?;
    let localpart = identified_localpart(state, body)?;
    let user_id = OwnedUserId::try_from(format!("@{localpart}:{}", state.server_name())).map_err(|_| bad_login())?;
    if !service.is_user_in_namespace(user_id.as_str()) {
        return Err(MatrixError::new(
            ErrorCode::Exclusive,
            "This user is outside the application service's namespaces",
        )
        .into());
    }
    if !storage::accounts::exists(&state.db, &localpart).await? {
        return Err(bad_login().into());
    }
    refuse_deactivated(state, &localpart).await?;
    Ok(user_id)
}

/// The application service whose `as_token` the request carries: `401
/// M_MISSING_TOKEN` without a token, `401 M_UNKNOWN_TOKEN` for another token.
pub fn app_service_of<'s>(state: &'s AppState, parts: &Parts) -> Result<&'s AppService> {
    let token = myelin_types::auth::access_token(parts).ok_or_else(MatrixError::missing_token)?;
    let service = state.app_services.by_token_hash(&random::token_hash(&token));
    Ok(service.ok_or_else(MatrixError::unknown_token)?)
}

/// The user a login token was minted for; the token is spent.
async fn token_login(state: &AppState, token: Option<&str>) -> Result<OwnedUserId> {
    let Some(token) = token else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "Token is missing").into());
    };
    let invalid = || MatrixError::forbidden("Invalid or expired login token");
    let user_id =
        login_tokens::take(&state.db, &random::token_hash(token), state.now_ms()).await?.ok_or_else(invalid)?;
    let user_id = OwnedUserId::try_from(user_id).map_err(|_| invalid())?;
    refuse_deactivated(state, user_id.localpart()).await?;
    Ok(user_id)
}

async fn refuse_deactivated(state: &AppState, localpart: &str) -> Result<()> {
    if storage::accounts::is_deactivated(&state.db, localpart).await? {
        return Err(MatrixError::new(ErrorCode::UserDeactivated, "This account has been deactivated").into());
    }
    Ok(())
}

/// `POST /_matrix/client/v3/logout`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3logout>
///
/// An application service acting without a device has no session to end.
pub async fn logout(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    if !user.device_id.is_empty() {
        accounts::end_session(&state, &user.user_id, &user.device_id).await?;
    }
    Ok(Json(json!({})))
}

/// `POST /_matrix/client/v3/logout/all`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3logoutall>
pub async fn logout_all(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    accounts::end_all_sessions(&state, &user.user_id).await?;
    Ok(Json(json!({})))
}
