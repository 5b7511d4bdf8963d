//! Invites of this server's users by other servers' users: the room
//! server checks the event and countersigns it (never the body as
//! received), and keeps it so the invitee sees it.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#inviting-to-a-room>

use axum::Json;
use axum::extract::{Path, State};
use myelin_roomserver::api::{INPUT_TOPIC, InputOk, InputReply, InputRequest, REQUEST_TIMEOUT, ReceivedInvite};
use myelin_types::ruma::{OwnedRoomId, OwnedServerName};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Signed;
use super::{FederationState, bus_error, check_acl, event_id_of, parse_room_id};
use crate::consumers::perform::JOINABLE_VERSIONS;

/// The body of `/v2/invite`.
#[derive(Deserialize)]
pub(super) struct InviteBody {
    room_version: String,
    event: Value,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

/// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2inviteroomideventid>
pub(super) async fn invite_v2(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<InviteBody>,
) -> Result<Json<Value>, MatrixError> {
    let event = invite(&state, origin, &room_id, &event_id, body).await?;
    Ok(Json(json!({ "event": event })))
}

/// PUT /_matrix/federation/v1/invite/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1inviteroomideventid>
///
/// For rooms of versions 1 and 2, whose events carry their id; the answer
/// has the historical `[200, {…}]` shape.
pub(super) async fn invite_v1(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let invite_room_state =
        body.pointer("/unsigned/invite_room_state").and_then(Value::as_array).cloned().unwrap_or_default();
    let body = InviteBody { room_version: "1".to_owned(), event: body, invite_room_state };
    let event = invite(&state, origin, &room_id, &event_id, body).await?;
    Ok(Json(json!([200, { "event": event }])))
}

/// The ids in the path must be the event's; everything else about the
/// invite is the room server's to check before it signs.
async fn invite(
    state: &FederationState,
    origin: OwnedServerName,
    room_id: &str,
    event_id: &str,
    body: InviteBody,
) -> Result<Value, MatrixError> {
    let room_id: OwnedRoomId = parse_room_id(room_id)?;
    check_acl(state, &origin, &room_id).await?;
    if !JOINABLE_VERSIONS.contains(&body.room_version.as_str()) {
        return Err(MatrixError::new(
            ErrorCode::IncompatibleRoomVersion,
            format!("Room version {} is not supported here", body.room_version),
        ));
    }
    if body.event.get("room_id").and_then(Value::as_str) != Some(room_id.as_str()) {
        return Err(MatrixError::bad_json("The event's room_id is not the room in the path"));
    }
    if event_id_of(&body.event, &body.room_version)?.as_str() != event_id {
        return Err(MatrixError::bad_json("The event id in the path is not the event's id"));
    }
    let request = InputRequest::ReceivedInvite(ReceivedInvite {
        origin,
        room_id: room_id.clone(),
        room_version: body.room_version,
        event: body.event,
        invite_room_state: body.invite_room_state,
    });
    let reply: InputReply =
        state.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await.map_err(bus_error)?;
    match reply? {
        InputOk::InviteSigned { event } => Ok(event),
        other => {
            tracing::error!(?other, "the room server answered an invite with something else");
            Err(MatrixError::internal())
        }
    }
}
