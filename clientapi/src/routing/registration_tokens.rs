//! Synapse's admin API for registration tokens, for server admins:
//! <https://element-hq.github.io/synapse/latest/usage/administration/admin_api/registration_tokens.html>

use axum::Json;
use axum::extract::State;
use myelin_types::{MatrixError, random};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};

use crate::auth::AdminUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, MatrixQuery};
use crate::service::AppState;
use crate::storage::registration_tokens::{self, RegistrationToken};

/// Longest token, as in Synapse.
const MAX_TOKEN_LEN: usize = 64;
/// Length of a generated token when none is asked for.
const DEFAULT_LENGTH: usize = 16;

fn to_json(token: &RegistrationToken) -> Value {
    json!({
        "token": token.token,
        "uses_allowed": token.uses_allowed,
        "pending": token.pending,
        "completed": token.completed,
        "expiry_time": token.expiry_time,
    })
}

fn not_found() -> MatrixError {
    MatrixError::not_found("No such registration token")
}

fn check_limits(state: &AppState, uses_allowed: Option<i64>, expiry_time: Option<i64>) -> Result<(), MatrixError> {
    if uses_allowed.is_some_and(|uses| uses < 0) {
        return Err(MatrixError::invalid_param("uses_allowed must be a non-negative integer or null"));
    }
    if expiry_time.is_some_and(|expiry| expiry < state.now_ms()) {
        return Err(MatrixError::invalid_param("expiry_time must not be in the past"));
    }
    Ok(())
}

#[derive(Deserialize)]
pub struct ListQuery {
    valid: Option<bool>,
}

/// `GET /_synapse/admin/v1/registration_tokens`
pub async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixQuery(query): MatrixQuery<ListQuery>,
) -> Result<Json<Value>> {
    let now = state.now_ms();
    let tokens: Vec<Value> = registration_tokens::list(&state.db)
        .await?
        .iter()
        .filter(|token| query.valid.is_none_or(|valid| token.is_valid(now) == valid))
        .map(to_json)
        .collect();
    Ok(Json(json!({ "registration_tokens": tokens })))
}

/// `GET /_synapse/admin/v1/registration_tokens/{token}`
pub async fn get(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixPath(token): MatrixPath<String>,
) -> Result<Json<Value>> {
    let token = registration_tokens::get(&state.db, &token).await?.ok_or_else(not_found)?;
    Ok(Json(to_json(&token)))
}

#[derive(Deserialize)]
pub struct NewBody {
    token: Option<String>,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
    length: Option<usize>,
}

/// `POST /_synapse/admin/v1/registration_tokens/new`
pub async fn create(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixJson(body): MatrixJson<NewBody>,
) -> Result<Json<Value>> {
    check_limits(&state, body.uses_allowed, body.expiry_time)?;
    let name = match (body.token, body.length) {
        (Some(_), Some(_)) => return Err(MatrixError::invalid_param("token and length are exclusive").into()),
        (Some(token), None) => {
            let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-');
            if token.is_empty() || token.len() > MAX_TOKEN_LEN || !token.chars().all(allowed) {
                return Err(MatrixError::invalid_param(format!(
                    "token must be 1 to {MAX_TOKEN_LEN} characters of A-Z, a-z, 0-9, ., _, ~ and -"
                ))
                .into());
            }
            token
        }
        (None, length) => {
            let length = length.unwrap_or(DEFAULT_LENGTH);
            if !(1..=MAX_TOKEN_LEN).contains(&length) {
                return Err(MatrixError::invalid_param(format!("length must be 1 to {MAX_TOKEN_LEN}")).into());
            }
            random::alphanumeric(length)
        }
    };
    let token = RegistrationToken {
        token: name,
        uses_allowed: body.uses_allowed,
        pending: 0,
        completed: 0,
        expiry_time: body.expiry_time,
    };
    if !registration_tokens::create(&state.db, &token).await? {
        return Err(MatrixError::invalid_param("Token already exists").into());
    }
    Ok(Json(to_json(&token)))
}

/// A field that may be absent (unchanged), `null` (no limit) or a value.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Option<i64>>, D::Error> {
    Option::<i64>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
pub struct UpdateBody {
    #[serde(default, deserialize_with = "present")]
    uses_allowed: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    expiry_time: Option<Option<i64>>,
}

/// `PUT /_synapse/admin/v1/registration_tokens/{token}`
pub async fn update(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixPath(token): MatrixPath<String>,
    MatrixJson(body): MatrixJson<UpdateBody>,
) -> Result<Json<Value>> {
    let current = registration_tokens::get(&state.db, &token).await?.ok_or_else(not_found)?;
    let uses_allowed = body.uses_allowed.unwrap_or(current.uses_allowed);
    let expiry_time = body.expiry_time.unwrap_or(current.expiry_time);
    check_limits(&state, body.uses_allowed.flatten(), body.expiry_time.flatten())?;
    let updated =
        registration_tokens::update(&state.db, &token, uses_allowed, expiry_time).await?.ok_or_else(not_found)?;
    Ok(Json(to_json(&updated)))
}

/// `DELETE /_synapse/admin/v1/registration_tokens/{token}`
pub async fn delete(
    State(state): State<AppState>,
    _admin: AdminUser,
    MatrixPath(token): MatrixPath<String>,
) -> Result<Json<Value>> {
    if !registration_tokens::delete(&state.db, &token).await? {
        return Err(not_found().into());
    }
    Ok(Json(json!({})))
}
