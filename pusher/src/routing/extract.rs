//! Extractors that fail as the spec wants: the caller (`401` without a
//! known token, checked before anything else), JSON bodies (`M_NOT_JSON`
//! when unparsable, `M_BAD_JSON` when of the wrong shape) and path
//! parameters (`M_INVALID_PARAM`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use myelin_clientapi::api::Caller;

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

pub use myelin_types::json::MatrixJson;

/// Path parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(PusherError))]
pub struct MatrixPath<T>(pub T);

/// Query parameters, with failures as `400 M_INVALID_PARAM`.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(PusherError))]
pub struct MatrixQuery<T>(pub T);
