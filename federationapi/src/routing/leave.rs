//! Leaving this server's rooms from other servers: `/make_leave` hands out
//! a template the room server built from the current state, `/send_leave`
//! takes the signed leave through the one validation pipeline.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>

use axum::Json;
use axum::extract::{Path, State};
use myelin_roomserver::api::{QueryOk, QueryRequest};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use super::join::submit_membership;
use super::{FederationState, check_acl, parse_room_id, query_room_server, unexpected};

/// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_leaveroomiduserid>
pub(super) async fn make_leave(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    check_acl(&state, &origin, &room_id).await?;
    let user_id = OwnedUserId::try_from(user_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))?;
    if user_id.server_name().as_str() != origin.as_str() {
        return Err(MatrixError::forbidden(format!("{origin} cannot make a leave event for {user_id}")));
    }
    let request = QueryRequest::MakeLeave { room_id: room_id.clone(), user_id };
    match query_room_server(&state, room_id.as_str(), &request).await? {
        QueryOk::JoinTemplate { room_version, event } => {
            Ok(Json(json!({ "room_version": room_version, "event": event })))
        }
        other => Err(unexpected(other)),
    }
}

/// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_leaveroomideventid>
pub(super) async fn send_leave_v2(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    submit_membership(&state, origin, &room_id, &event_id, &body, "leave").await?;
    Ok(Json(json!({})))
}

/// PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1send_leaveroomideventid>
///
/// The same as v2 in the historical `[200, {}]` shape.
pub(super) async fn send_leave_v1(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    submit_membership(&state, origin, &room_id, &event_id, &body, "leave").await?;
    Ok(Json(json!([200, {}])))
}
