//! OpenID: a token a third party (an integration manager, a widget host)
//! checks with this server's federation API to learn who the user is.

use axum::Json;
use axum::extract::State;
use myelin_types::random;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::routing::require_self;
use crate::service::AppState;
use crate::storage::openid;

/// How long an OpenID token is valid, in seconds (as Synapse).
pub const OPENID_TOKEN_LIFETIME_SECS: i64 = 3600;

/// `POST /_matrix/client/v3/user/{userId}/openid/request_token`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3useruseridopenidrequest_token>
pub async fn request_token(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(user_id): MatrixPath<String>,
    MatrixJson(_body): MatrixJson<serde_json::Map<String, Value>>,
) -> Result<Json<Value>> {
    require_self(&user, &user_id, "request an OpenID token")?;
    let token = random::alphanumeric(32);
    let now = state.now_ms();
    let expires = now + OPENID_TOKEN_LIFETIME_SECS * 1000;
    openid::insert(&state.db, &random::token_hash(&token), user.user_id.as_str(), now, expires).await?;
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "matrix_server_name": state.server_name(),
        "expires_in": OPENID_TOKEN_LIFETIME_SECS,
    })))
}
