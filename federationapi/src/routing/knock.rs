//! Knocking on this server's rooms from other servers: `/make_knock` hands
//! out a template the room server built from the current state,
//! `/send_knock` takes the signed knock through the one validation
//! pipeline and answers with the room's stripped state.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#knocking-upon-a-room>

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use myelin_roomserver::api::{QueryOk, QueryRequest};
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use super::join::{membership_template, origins_user, submit_membership, ver_params};
use super::{FederationState, check_acl, parse_room_id, query_room_server, unexpected};

/// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_knockroomiduserid>
pub(super) async fn make_knock(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    check_acl(&state, &origin, &room_id).await?;
    let user_id = origins_user(&origin, &user_id, "knock")?;
    // Unlike `/make_join`, `ver` is required: knocking came with room version 7.
    let supported_versions: Vec<String> = ver_params(query.as_deref());
    if supported_versions.is_empty() {
        return Err(MatrixError::new(ErrorCode::MissingParam, "ver is required"));
    }
    let request = QueryRequest::MakeKnock { room_id: room_id.clone(), user_id, supported_versions };
    membership_template(&state, &room_id, &request).await
}

/// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1send_knockroomideventid>
pub(super) async fn send_knock(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    submit_membership(&state, origin, &room_id, &event_id, &body, "knock").await?;
    match query_room_server(&state, room_id.as_str(), &QueryRequest::StrippedState { room_id: room_id.clone() }).await?
    {
        QueryOk::StrippedState { events } => Ok(Json(json!({ "knock_room_state": events }))),
        other => Err(unexpected(other)),
    }
}
