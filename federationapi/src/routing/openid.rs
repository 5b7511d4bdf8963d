//! `/openid/userinfo`: who an OpenID token names, for third parties. Not
//! signed with X-Matrix (the caller is not a homeserver); the token itself
//! is the proof, checked by the client API, which issued it
//! (`clientapi.openid`).

use axum::Json;
use axum::extract::{RawQuery, State};
use myelin_clientapi::api::{OPENID_QUERY_TOPIC, OpenIdQuery, OpenIdReply};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Value, json};

use super::FederationState;

/// GET /_matrix/federation/v1/openid/userinfo?access_token=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1openiduserinfo>
pub(super) async fn userinfo(
    State(state): State<FederationState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let token = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, "access_token is required"))?;
    let token_hash = myelin_types::random::token_hash(&token);
    let request = OpenIdQuery { token_hash };
    let reply: OpenIdReply =
        state.bus.request_json(OPENID_QUERY_TOPIC, &request.token_hash, &request, REQUEST_TIMEOUT).await.map_err(
            |error| {
                tracing::warn!(%error, "the client API did not answer an OpenID query");
                MatrixError::internal()
            },
        )?;
    let user_id = reply.ok_or_else(MatrixError::unknown_token)?;
    Ok(Json(json!({ "sub": user_id })))
}
