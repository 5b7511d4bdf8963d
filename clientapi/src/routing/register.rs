use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError, random};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::{self, MAX_PASSWORD_LEN, Registration};
use crate::error::{ClientApiError, Result};
use crate::json::{MatrixJson, MatrixQuery};
use crate::routing::login::app_service_of;
use crate::service::AppState;
use crate::storage::{self, tokens};
use crate::uia::SESSION_LIFETIME_MS;

#[derive(Deserialize)]
pub struct RegisterQuery {
    kind: Option<String>,
}

#[derive(Deserialize)]
pub struct RegisterBody {
    username: Option<String>,
    password: Option<String>,
    device_id: Option<String>,
    initial_device_display_name: Option<String>,
    #[serde(default)]
    inhibit_login: bool,
    auth: Option<AuthData>,
    /// The client can refresh: its access token expires, with a refresh token.
    #[serde(default)]
    refresh_token: bool,
    /// A guest upgrading its own account (with `username` its localpart).
    guest_access_token: Option<String>,
    /// `m.login.application_service`: an application service registering
    /// a user of its namespaces, with its `as_token` and no other stage.
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    /// The `m.login.registration_token` stage's token.
    token: Option<String>,
}

/// The one UIA stage registration asks for.
const DUMMY: &str = "m.login.dummy";
const REGISTRATION_TOKEN: &str = "m.login.registration_token";
/// The registration type of application services.
const APP_SERVICE: &str = "m.login.application_service";

fn stage(state: &AppState) -> &'static str {
    if state.config.client_api.registration_requires_token { REGISTRATION_TOKEN } else { DUMMY }
}

fn registration_closed() -> MatrixError {
    MatrixError::forbidden("Registration has been disabled")
}

/// The body of a `401` asking the client to complete the stage, with
/// `error` when its last attempt failed.
fn uia_challenge(stage: &str, session: &str, error: Option<MatrixError>) -> Response {
    let mut body = json!({ "flows": [{ "stages": [stage] }], "params": {}, "session": session });
    if let Some(error) = error {
        body["errcode"] = json!(error.errcode);
        body["error"] = json!(error.error);
    }
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// `POST /_matrix/client/v3/register`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3register>
///
/// Closed unless `client_api.open_registration`; then one flow, `m.login.dummy`
/// (`m.login.registration_token` with `client_api.registration_requires_token`),
/// which also upgrades a guest (`guest_access_token`). Guests register
/// (`kind=guest`) while `client_api.allow_guest_access`.
pub async fn register(
    State(state): State<AppState>,
    MatrixQuery(query): MatrixQuery<RegisterQuery>,
    parts: Parts,
    MatrixJson(body): MatrixJson<RegisterBody>,
) -> Result<Response> {
    match query.kind.as_deref() {
        None | Some("user") => {}
        Some("guest") => return register_guest(&state, body).await,
        Some(_) => return Err(MatrixError::invalid_param("Invalid kind").into()),
    }
    if body.kind.as_deref() == Some(APP_SERVICE) {
        return register_for_app_service(&state, &parts, body).await;
    }
    if !state.config.client_api.open_registration {
        return Err(registration_closed().into());
    }
    // Check what can be checked before authentication, as clients expect.
    let username = body.username.map(|u| u.to_lowercase());
    let guest = match &body.guest_access_token {
        Some(token) => Some(guest_to_upgrade(&state, token, username.as_deref()).await?),
        None => None,
    };
    if let Some(username) = &username
        && guest.is_none()
    {
        let user_id = accounts::new_user_id(username, state.server_name())?;
        state.app_services.check_user_free(user_id.as_str(), None)?;
        if storage::accounts::exists(&state.db, username).await? {
            return Err(accounts::user_in_use().into());
        }
    }
    if body.password.as_ref().is_some_and(|p| p.len() > MAX_PASSWORD_LEN) {
        return Err(MatrixError::invalid_param("Password too long").into());
    }

    let now = state.now_ms();
    let stage = stage(&state);
    let session = match body.auth {
        None => {
            let session = random::alphanumeric(24);
            storage::registration::create_uia_session(&state.db, &session, now, now - SESSION_LIFETIME_MS).await?;
            return Ok(uia_challenge(stage, &session, None));
        }
        Some(auth) => {
            if let Some(session) = &auth.session {
                let created = storage::registration::uia_session(&state.db, session).await?;
                if created.is_none_or(|created| created < now - SESSION_LIFETIME_MS) {
                    return Err(MatrixError::new(ErrorCode::Unknown, "Unknown or expired session")
                        .with_status(StatusCode::BAD_REQUEST)
                        .into());
                }
            }
            match auth.kind.as_deref() {
                Some(kind) if kind == stage && kind == DUMMY => {}
                Some(kind) if kind == stage => {
                    if let Some(response) = token_stage(&state, auth.session.as_deref(), auth.token, now).await? {
                        return Ok(response);
                    }
                }
                Some(_) => {
                    return Err(MatrixError::new(ErrorCode::Unknown, "Unsupported authentication type")
                        .with_status(StatusCode::BAD_REQUEST)
                        .into());
                }
                // Polling a session without completing a stage: challenge again.
                None => {
                    return match auth.session {
                        Some(session) => Ok(uia_challenge(stage, &session, None)),
                        None => Err(MatrixError::bad_json("auth.type is missing").into()),
                    };
                }
            }
            auth.session
        }
    };

    let login = (!body.inhibit_login).then_some((body.device_id, body.initial_device_display_name));
    let refreshable = body.refresh_token;
    let (user_id, login_session) = match (guest, username) {
        (Some(guest), _) => upgrade_guest(&state, guest, body.password, refreshable).await?,
        (None, Some(localpart)) => {
            let registration = Registration {
                localpart,
                password: body.password,
                admin: false,
                user_type: None,
                is_guest: false,
                login,
                refreshable,
                by_app_service: false,
            };
            accounts::register(&state, registration).await?
        }
        (None, None) => register_generated(&state, body.password, login, false, refreshable).await?,
    };
    if let Some(session) = session {
        if stage == REGISTRATION_TOKEN {
            storage::registration_tokens::complete(&state.db, &session).await?;
        } else {
            storage::registration::delete_uia_session(&state.db, &session).await?;
        }
    }
    let mut reply = json!({ "user_id": user_id, "home_server": state.server_name() });
    if let Some(login) = login_session {
        login.add_to(&mut reply);
    }
    Ok(Json(reply).into_response())
}

/// `type: m.login.application_service`: a user of the calling application
/// service's namespaces, without password or interactive authentication,
/// whether or not registration is open. `401` without a valid `as_token`,
/// `400 M_EXCLUSIVE` for a user outside its namespaces (or held by another
/// service exclusively).
///
/// Spec: <https://spec.matrix.org/v1.16/application-service-api/#server-admin-style-permissions>
async fn register_for_app_service(state: &AppState, parts: &Parts, body: RegisterBody) -> Result<Response> {
    let service = app_service_of(state, parts)?;
    let Some(localpart) = body.username.map(|u| u.to_lowercase()) else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "An application service must name the user").into());
    };
    let user_id = accounts::new_app_service_user_id(&localpart, state.server_name())?;
    if !service.is_user_in_namespace(user_id.as_str()) {
        return Err(MatrixError::new(
            ErrorCode::Exclusive,
            "This user is outside the application service's namespaces",
        )
        .into());
    }
    state.app_services.check_user_free(user_id.as_str(), Some(service))?;
    let registration = Registration {
        localpart,
        password: None,
        admin: false,
        user_type: None,
        is_guest: false,
        login: (!body.inhibit_login).then_some((body.device_id, body.initial_device_display_name)),
        refreshable: body.refresh_token,
        by_app_service: true,
    };
    let (user_id, session) = accounts::register(state, registration).await?;
    let mut reply = json!({ "user_id": user_id, "home_server": state.server_name() });
    if let Some(session) = session {
        session.add_to(&mut reply);
    }
    Ok(Json(reply).into_response())
}

/// The `m.login.registration_token` stage: `None` once the session holds a
/// use of a valid token (taken now, or on an earlier attempt), else the
/// `401` to answer with.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#token-authenticated-registration>
async fn token_stage(
    state: &AppState,
    session: Option<&str>,
    token: Option<String>,
    now: i64,
) -> Result<Option<Response>> {
    let Some(session) = session else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "auth.session is required").into());
    };
    if storage::registration_tokens::of_session(&state.db, session).await?.is_some() {
        return Ok(None);
    }
    let Some(token) = token else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "auth.token is required").into());
    };
    if storage::registration_tokens::take_pending(&state.db, &token, session, now).await? {
        return Ok(None);
    }
    let error = MatrixError::new(ErrorCode::Unauthorized, "Invalid registration token");
    Ok(Some(uia_challenge(REGISTRATION_TOKEN, session, Some(error))))
}

#[derive(Deserialize)]
pub struct ValidityQuery {
    token: String,
}

/// `GET /_matrix/client/v1/register/m.login.registration_token/validity`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1registermloginregistration_tokenvalidity>
///
/// `403 M_FORBIDDEN` unless registration takes tokens.
pub async fn token_validity(
    State(state): State<AppState>,
    MatrixQuery(query): MatrixQuery<ValidityQuery>,
) -> Result<Json<Value>> {
    if !state.config.client_api.open_registration || stage(&state) != REGISTRATION_TOKEN {
        return Err(registration_closed().into());
    }
    let token = storage::registration_tokens::get(&state.db, &query.token).await?;
    let valid = token.is_some_and(|token| token.is_valid(state.now_ms()));
    Ok(Json(json!({ "valid": valid })))
}

/// Registration without a username: pick a random localpart.
async fn register_generated(
    state: &AppState,
    password: Option<String>,
    login: Option<(Option<String>, Option<String>)>,
    is_guest: bool,
    refreshable: bool,
) -> Result<(OwnedUserId, Option<accounts::Session>)> {
    for _ in 0..5 {
        let localpart = random::alphanumeric(12).to_lowercase();
        let registration = Registration {
            localpart,
            password: password.clone(),
            admin: false,
            user_type: None,
            is_guest,
            login: login.clone(),
            refreshable,
            by_app_service: false,
        };
        match accounts::register(state, registration).await {
            Err(ClientApiError::Matrix(e)) if e.errcode == ErrorCode::UserInUse => continue,
            other => return other,
        }
    }
    Err(MatrixError::internal().into())
}

/// `POST /register?kind=guest`: a guest account, with a generated user id
/// and no password, logged in at once. No interactive authentication: the
/// operator opted into anonymous guests.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
async fn register_guest(state: &AppState, body: RegisterBody) -> Result<Response> {
    if !state.config.client_api.allow_guest_access {
        return Err(MatrixError::guest_access_forbidden().into());
    }
    let login = Some((body.device_id, body.initial_device_display_name));
    let (user_id, session) = register_generated(state, None, login, true, body.refresh_token).await?;
    let session = session.ok_or_else(MatrixError::internal)?;
    let mut reply = json!({ "user_id": user_id, "home_server": state.server_name() });
    session.add_to(&mut reply);
    Ok(Json(reply).into_response())
}

/// The guest behind `guest_access_token`, which may upgrade only to its
/// own localpart, named as `username` (as the spec requires).
async fn guest_to_upgrade(state: &AppState, token: &str, username: Option<&str>) -> Result<tokens::Owner> {
    let owner = tokens::lookup(&state.db, &random::token_hash(token)).await?.ok_or_else(MatrixError::unknown_token)?;
    if !owner.is_guest {
        return Err(MatrixError::forbidden("guest_access_token is not a guest's").into());
    }
    let Some(username) = username else {
        return Err(MatrixError::new(ErrorCode::MissingParam, "Upgrading a guest needs its username").into());
    };
    let guest_id = OwnedUserId::try_from(owner.user_id.as_str()).map_err(|_| MatrixError::internal())?;
    if guest_id.localpart() != username {
        return Err(MatrixError::forbidden("A guest may only upgrade to its own username").into());
    }
    Ok(owner)
}

/// Make the guest a full user with `password`. It keeps its user id and
/// device, which gets a new access token (`device_id` and `inhibit_login`
/// do not apply): the guest's token stops working, since other components
/// cache whether a token is a guest's.
async fn upgrade_guest(
    state: &AppState,
    guest: tokens::Owner,
    password: Option<String>,
    refreshable: bool,
) -> Result<(OwnedUserId, Option<accounts::Session>)> {
    let user_id = OwnedUserId::try_from(guest.user_id).map_err(|_| MatrixError::internal())?;
    let password_hash = match password {
        Some(password) => Some(accounts::hash_password(password).await?),
        None => None,
    };
    if !storage::accounts::upgrade_guest(&state.db, user_id.localpart(), password_hash.as_deref()).await? {
        return Err(MatrixError::forbidden("This account is no longer a guest").into());
    }
    let session = accounts::start_session(state, &user_id, Some(guest.device_id), None, refreshable).await?;
    Ok((user_id, Some(session)))
}

#[derive(Deserialize)]
pub struct AvailableQuery {
    username: String,
}

/// `GET /_matrix/client/v3/register/available`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3registeravailable>
///
/// Answered only while registration is open, so that closed servers do not
/// reveal which accounts exist.
pub async fn available(
    State(state): State<AppState>,
    MatrixQuery(query): MatrixQuery<AvailableQuery>,
) -> Result<Json<Value>> {
    if !state.config.client_api.open_registration {
        return Err(registration_closed().into());
    }
    let username = query.username.to_lowercase();
    let user_id = accounts::new_user_id(&username, state.server_name())?;
    state.app_services.check_user_free(user_id.as_str(), None)?;
    if storage::accounts::exists(&state.db, &username).await? {
        return Err(accounts::user_in_use().into());
    }
    Ok(Json(json!({ "available": true })))
}
