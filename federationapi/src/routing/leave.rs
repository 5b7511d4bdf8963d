//! Leaving this server's rooms from other servers: `/make_leave` hands out
//! a template the room server built from the current state, `/send_leave`
//! takes the signed leave through the one validation pipeline.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>

use axum::Json;
use axum::extract::{Path, State};
use myelin_roomserver::api::QueryRequest;
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use super::join::{membership_template, origins_user, submit_membership};
use super::{FederationState, check_acl, parse_room_id};

/// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_leaveroomiduserid>
pub(super) async fn make_leave(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    check_acl(&state, &origin, &room_id).await?;
    let user_id = origins_user(&origin, &user_id, "leave")?;
    let request = QueryRequest::MakeLeave { room_id: room_id.clone(), user_id };
    membership_template(&state, &room_id, &request).await
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
