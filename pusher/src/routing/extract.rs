//! Extractors that fail as the spec wants: the caller (`401` without a
//! known token, checked before anything else), JSON bodies (`M_NOT_JSON`
//! when unparsable, `M_BAD_JSON` when of the wrong shape) and path
//! parameters (`M_INVALID_PARAM`).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use myelin_clientapi::api::Caller;
use myelin_types::{ErrorCode, MatrixError};
use serde::de::DeserializeOwned;

use super::AppState;
use crate::PusherError;

/// The user, device and token behind the request.
pub struct Authed(pub Caller);

impl FromRequestParts<AppState> for Authed {
    type Rejection = PusherError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(state.auth.caller(parts).await?))
    }
}

/// A JSON request body of shape `T`.
pub struct MatrixJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MatrixJson<T> {
    type Rejection = PusherError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                MatrixError::too_large("Request body too large")
            } else {
                MatrixError::new(ErrorCode::NotJson, "Could not read the request body")
            }
        })?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|_| MatrixError::new(ErrorCode::NotJson, "Content not JSON"))?;
        let parsed =
            serde_json::from_value(value).map_err(|e| MatrixError::bad_json(format!("Invalid request body: {e}")))?;
        Ok(Self(parsed))
    }
}

/// Path parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(PusherError))]
pub struct MatrixPath<T>(pub T);

/// Query parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(PusherError))]
pub struct MatrixQuery<T>(pub T);
