//! Extractors for requests signed with X-Matrix: [`Origin`] for requests
//! without a body, [`Signed`] for requests with a JSON body.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#request-authentication>

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use myelin_types::MatrixError;
use myelin_types::ruma::{CanonicalJsonValue, OwnedServerName};
use serde::de::DeserializeOwned;

use super::FederationState;
use crate::error::AuthError;
use crate::xmatrix::XMatrix;

/// The largest request body read (a transaction of 50 PDUs of 64 KiB and
/// 100 EDUs fits easily).
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The authenticated origin server of a request without a body.
pub struct Origin(pub OwnedServerName);

/// The authenticated origin of a request and its JSON body.
pub struct Signed<T> {
    pub origin: OwnedServerName,
    pub body: T,
}

impl FromRequestParts<FederationState> for Origin {
    type Rejection = MatrixError;

    async fn from_request_parts(parts: &mut Parts, state: &FederationState) -> Result<Self, Self::Rejection> {
        Ok(Self(authenticate(state, parts, None).await?))
    }
}

impl<T: DeserializeOwned> FromRequest<FederationState> for Signed<T> {
    type Rejection = MatrixError;

    async fn from_request(req: Request, state: &FederationState) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
            .await
            .map_err(|_| MatrixError::too_large("Request body too large"))?;
        let value: serde_json::Value = myelin_types::json::parse(&bytes)?;
        let content = CanonicalJsonValue::try_from(value.clone()).map_err(|e| AuthError::BadBody(e.to_string()))?;
        let origin = authenticate(state, &parts, Some(&content)).await?;
        let body =
            serde_json::from_value(value).map_err(|e| MatrixError::bad_json(format!("Invalid request body: {e}")))?;
        Ok(Self { origin, body })
    }
}

/// Check the first X-Matrix `Authorization` header: the origin is a server
/// name, the destination (when given) is us, the key is one the origin
/// uses now, and the signature covers this method, URI, origin,
/// destination and body.
async fn authenticate(
    state: &FederationState,
    parts: &Parts,
    content: Option<&CanonicalJsonValue>,
) -> Result<OwnedServerName, AuthError> {
    let header = parts
        .headers
        .get_all(axum::http::header::AUTHORIZATION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.len() > 9 && value[..9].eq_ignore_ascii_case("X-Matrix "))
        .ok_or(AuthError::Missing)?;
    let auth = XMatrix::parse(header)?;
    let origin =
        OwnedServerName::try_from(auth.origin.as_str()).map_err(|_| AuthError::BadOrigin(auth.origin.clone()))?;
    let ours = state.keys.server_name();
    if let Some(destination) = auth.destination.as_deref().filter(|d| *d != ours) {
        return Err(AuthError::WrongDestination(destination.to_owned()));
    }
    let key = state
        .keys
        .request_key(&auth.origin, &auth.key_id)
        .await?
        .ok_or_else(|| AuthError::UnknownKey { origin: auth.origin.clone(), key_id: auth.key_id.clone() })?;
    let uri = parts.uri.path_and_query().map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    auth.verify(&key, parts.method.as_str(), uri, ours, content)?;
    Ok(origin)
}
