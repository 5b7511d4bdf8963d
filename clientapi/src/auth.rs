//! The access-token extractors: `401 M_MISSING_TOKEN` without a token,
//! `401 M_UNKNOWN_TOKEN` for one the tokens table does not know (with
//! `soft_logout: true` once a refreshable token expired), and
//! `403 M_GUEST_ACCESS_FORBIDDEN` for a guest, except on the endpoints the
//! spec opens to guests, which take [`GuestOk`] instead.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError};

use crate::appservice::{Assertion, identify};
use crate::error::ClientApiError;
use crate::service::AppState;

/// The user and device behind the request's access token, or the user
/// (and device) an application service asserts with its `as_token`.
#[derive(Debug, Clone)]
pub struct AuthedUser {
    pub user_id: OwnedUserId,
    /// Empty for an application service that asserted no device.
    pub device_id: String,
    /// Only ever `true` behind [`GuestOk`].
    pub is_guest: bool,
    /// A server admin (see [`AdminUser`]).
    pub is_admin: bool,
    /// The application service whose `as_token` the request carried.
    pub app_service: Option<String>,
}

impl AuthedUser {
    /// The token's owner, guest or not.
    async fn resolve(parts: &Parts, state: &AppState) -> Result<Self, ClientApiError> {
        let token = myelin_types::auth::access_token(parts).ok_or_else(MatrixError::missing_token)?;
        let hash = myelin_types::random::token_hash(&token);
        let identity = identify(&state.db, &state.app_services, &hash, &Assertion::of(parts)).await?;
        if identity.expires_ms.is_some_and(|expires| i64::try_from(expires).unwrap_or(i64::MAX) <= state.now_ms()) {
            return Err(MatrixError::soft_logout().into());
        }
        Ok(Self {
            user_id: identity.user_id,
            device_id: identity.device_id,
            is_guest: identity.is_guest,
            is_admin: identity.is_admin,
            app_service: identity.app_service,
        })
    }

    /// `400 M_MISSING_PARAM` for an application service acting without a
    /// device, on the endpoints that need one (the spec lets them fail).
    pub fn require_device(&self) -> Result<&str, MatrixError> {
        if self.device_id.is_empty() {
            return Err(MatrixError::new(
                ErrorCode::MissingParam,
                "This needs a device: pass the user's device_id with the application service token",
            ));
        }
        Ok(&self.device_id)
    }
}

impl FromRequestParts<AppState> for AuthedUser {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = Self::resolve(parts, state).await?;
        if user.is_guest {
            return Err(MatrixError::guest_access_forbidden().into());
        }
        Ok(user)
    }
}

/// `Option<AuthedUser>`: `None` without a token, for endpoints open to
/// anonymous clients; a token that is sent must still be valid (and not a guest's).
impl OptionalFromRequestParts<AppState> for AuthedUser {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Option<Self>, Self::Rejection> {
        if myelin_types::auth::access_token(parts).is_none() {
            return Ok(None);
        }
        <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await.map(Some)
    }
}

/// The caller of an endpoint the spec opens to guests: a user, or a guest
/// while the server allows guests (a guest token kept from before the
/// operator turned guest access off is refused everywhere).
#[derive(Debug, Clone)]
pub struct GuestOk(pub AuthedUser);

impl FromRequestParts<AppState> for GuestOk {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = AuthedUser::resolve(parts, state).await?;
        if user.is_guest && !state.config.client_api.allow_guest_access {
            return Err(MatrixError::guest_access_forbidden().into());
        }
        Ok(Self(user))
    }
}

/// An admin endpoint's caller is a server admin, else `403 M_FORBIDDEN`.
#[derive(Debug, Clone, Copy)]
pub struct AdminUser;

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ClientApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let user = <AuthedUser as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        if !user.is_admin {
            return Err(MatrixError::forbidden("You are not a server admin").into());
        }
        Ok(Self)
    }
}
