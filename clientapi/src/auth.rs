//! The access-token extractor: `401 M_MISSING_TOKEN` without a token,
//! `401 M_UNKNOWN_TOKEN` for one the tokens table does not know.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;

use crate::error::ClientApiError;
use crate::service::AppState;
use crate::storage::tokens;

/// The user and device behind the request's access token.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    pub user_id: OwnedUserId,
    pub device_id: String,
}

impl FromRequestParts<AppState> for AuthedUser {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = myelin_types::auth::access_token(parts).ok_or_else(MatrixError::missing_token)?;
        let hash = myelin_types::random::token_hash(&token);
        let (user_id, device_id) = tokens::lookup(&state.db, &hash).await?.ok_or_else(MatrixError::unknown_token)?;
        let user_id = OwnedUserId::try_from(user_id).map_err(|_| {
            tracing::error!("stored access token has an invalid user id");
            MatrixError::internal()
        })?;
        Ok(Self { user_id, device_id })
    }
}

/// `Option<AuthedUser>`: `None` without a token, for endpoints open to
/// anonymous clients; a token that is sent must still be valid.
impl OptionalFromRequestParts<AppState> for AuthedUser {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if myelin_types::auth::access_token(parts).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
    }
}
