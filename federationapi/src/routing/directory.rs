use axum::Json;
use axum::extract::{RawQuery, State};
use myelin_clientapi::api::{ALIAS_QUERY_TOPIC, AliasQuery, AliasReply};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedRoomAliasId;
use serde_json::{Value, json};

use super::FederationState;
use super::auth::Origin;

/// GET /_matrix/federation/v1/query/directory?room_alias=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1querydirectory>
///
/// Only this server's aliases are answered; the client API owns them.
pub(super) async fn query_directory(
    Origin(_origin): Origin,
    State(state): State<FederationState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let alias = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(key, _)| key == "room_alias")
        .map(|(_, alias)| alias.into_owned())
        .ok_or_else(|| MatrixError::new(myelin_types::ErrorCode::MissingParam, "room_alias is required"))?;
    let alias = OwnedRoomAliasId::try_from(alias.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias: {alias}")))?;
    let ours = state.keys.server_name();
    if alias.server_name().as_str() != ours {
        return Err(MatrixError::not_found(format!("Room alias {alias} is not on this server")));
    }
    let request = AliasQuery { alias: alias.to_string() };
    let reply: AliasReply =
        state.bus.request_json(ALIAS_QUERY_TOPIC, alias.as_str(), &request, REQUEST_TIMEOUT).await.map_err(
            |error| {
                tracing::warn!(%error, "the client API did not answer an alias query");
                MatrixError::internal()
            },
        )?;
    let room_id = reply.ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    Ok(Json(json!({ "room_id": room_id, "servers": [ours] })))
}
