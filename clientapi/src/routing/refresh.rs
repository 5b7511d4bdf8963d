//! Refreshing access tokens.

use axum::Json;
use axum::extract::State;
use myelin_types::ruma::OwnedUserId;
use myelin_types::{MatrixError, random};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::accounts::refreshable_lifetime_ms;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::producers;
use crate::service::AppState;
use crate::storage::refresh_tokens::{self, Refreshed};

#[derive(Deserialize)]
pub struct RefreshBody {
    refresh_token: String,
}

/// `POST /_matrix/client/v3/refresh`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3refresh>
///
/// A new access token (expiring) and refresh token; the access token issued
/// with the refresh token used stops working now. `401 M_UNKNOWN_TOKEN`
/// (`soft_logout`) for an unknown or retired refresh token.
pub async fn refresh(State(state): State<AppState>, MatrixJson(body): MatrixJson<RefreshBody>) -> Result<Json<Value>> {
    let access_token = random::access_token();
    let refresh_token = random::access_token();
    let (access_hash, refresh_hash) = (random::token_hash(&access_token), random::token_hash(&refresh_token));
    let now = state.now_ms();
    let lifetime = refreshable_lifetime_ms(&state);
    let new = Refreshed {
        access_hash: &access_hash,
        refresh_hash: &refresh_hash,
        now_ms: now,
        access_expires_ms: now.saturating_add(lifetime),
    };
    let refreshed =
        refresh_tokens::refresh(&state.db, &random::token_hash(&body.refresh_token), &new).await?.ok_or_else(|| {
            MatrixError { error: "Unknown or already used refresh token".to_owned(), ..MatrixError::soft_logout() }
        })?;
    let user_id = OwnedUserId::try_from(refreshed.user_id).map_err(|_| MatrixError::internal())?;
    producers::devices::tokens_revoked(&state.bus, &user_id, refreshed.revoked).await?;
    Ok(Json(json!({ "access_token": access_token, "refresh_token": refresh_token, "expires_in_ms": lifetime })))
}
