//! Joining this server's rooms from other servers: `/make_join` hands out
//! a template the room server built from the current state, `/send_join`
//! takes the signed join through the one validation pipeline and answers
//! with the state and auth chain before it.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms>

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use myelin_roomserver::api::{
    INPUT_TOPIC, InputOk, InputPdus, InputReply, InputRequest, PduKind, PduOutcome, QueryOk, QueryRequest,
    REQUEST_TIMEOUT, ReceivedJoin,
};
use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId};
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use super::{FederationState, bus_error, check_acl, event_id_of, parse_room_id, query_room_server, unexpected};
use crate::storage::sender as store;

/// The user a `make_*` request names, who must belong to the origin.
pub(super) fn origins_user(origin: &OwnedServerName, user_id: &str, kind: &str) -> Result<OwnedUserId, MatrixError> {
    let user_id = OwnedUserId::try_from(user_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))?;
    if user_id.server_name() != origin {
        return Err(MatrixError::forbidden(format!("{origin} cannot make a {kind} event for {user_id}")));
    }
    Ok(user_id)
}

/// The room versions a `make_*` request offers (`ver`, repeated).
pub(super) fn ver_params(query: Option<&str>) -> Vec<String> {
    url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(|(key, _)| key == "ver")
        .map(|(_, version)| version.into_owned())
        .collect()
}

/// The room server's membership template, as `make_*` answers it.
pub(super) async fn membership_template(
    state: &FederationState,
    room_id: &OwnedRoomId,
    request: &QueryRequest,
) -> Result<Json<Value>, MatrixError> {
    match query_room_server(state, room_id.as_str(), request).await? {
        QueryOk::JoinTemplate { room_version, event } => {
            Ok(Json(json!({ "room_version": room_version, "event": event })))
        }
        other => Err(unexpected(other)),
    }
}

/// GET /_matrix/federation/v1/make_join/{roomId}/{userId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_joinroomiduserid>
pub(super) async fn make_join(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path((room_id, user_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    check_acl(&state, &origin, &room_id).await?;
    let user_id = origins_user(&origin, &user_id, "join")?;
    // Without `ver` the joining server only speaks room version 1.
    let mut supported_versions: Vec<String> = ver_params(query.as_deref());
    if supported_versions.is_empty() {
        supported_versions.push("1".to_owned());
    }
    let request = QueryRequest::MakeJoin { room_id: room_id.clone(), user_id, supported_versions };
    membership_template(&state, &room_id, &request).await
}

/// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_joinroomideventid>
pub(super) async fn send_join_v2(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let mut response = send_join(&state, origin, &room_id, &event_id, body).await?;
    // The whole membership list is sent: partial joins are not offered.
    response["members_omitted"] = json!(false);
    Ok(Json(response))
}

/// PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv1send_joinroomideventid>
///
/// The same as v2 in the historical `[200, {…}]` shape.
pub(super) async fn send_join_v1(
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
    Signed { origin, body }: Signed<Value>,
) -> Result<Json<Value>, MatrixError> {
    let response = send_join(&state, origin, &room_id, &event_id, body).await?;
    Ok(Json(json!([200, response])))
}

/// Check that `event` is the join of a user of `origin` at the ids in the
/// path, run it through the room server's pipeline like any received PDU
/// (DESIGN.md invariant 4), and answer with the state before it and its
/// auth chain. A restricted join that one of this server's users
/// authorises is countersigned first, and answered signed.
async fn send_join(
    state: &FederationState,
    origin: OwnedServerName,
    room_id: &str,
    event_id: &str,
    event: Value,
) -> Result<Value, MatrixError> {
    let room_id = parse_room_id(room_id)?;
    let event = countersigned(state, &origin, &room_id, event).await?;
    let event_id = submit_membership(state, origin, &room_id, event_id, &event, "join").await?;

    let request = QueryRequest::StateAndAuthChain { room_id: room_id.clone(), event_id };
    match query_room_server(state, room_id.as_str(), &request).await? {
        QueryOk::StateAndAuthChain { state: room_state, auth_chain } => Ok(json!({
            "origin": state.keys.server_name(),
            "state": room_state,
            "auth_chain": auth_chain,
            "event": event,
        })),
        other => Err(unexpected(other)),
    }
}

/// `event` with this server's signature when its
/// `join_authorised_via_users_server` names a user of this server (the
/// room server checks the join deserves it), else as received.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#restricted-rooms>
async fn countersigned(
    state: &FederationState,
    origin: &OwnedServerName,
    room_id: &OwnedRoomId,
    event: Value,
) -> Result<Value, MatrixError> {
    let via = event.pointer("/content/join_authorised_via_users_server").and_then(Value::as_str);
    let ours = via
        .and_then(|via| OwnedUserId::try_from(via).ok())
        .is_some_and(|via| via.server_name().as_str() == state.keys.server_name());
    if !ours {
        return Ok(event);
    }
    check_acl(state, origin, room_id).await?;
    let request = InputRequest::ReceivedJoin(ReceivedJoin { origin: origin.clone(), room_id: room_id.clone(), event });
    let reply: InputReply =
        state.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await.map_err(bus_error)?;
    match reply? {
        InputOk::JoinSigned { event } => Ok(event),
        other => {
            tracing::error!(?other, "room server answered ReceivedJoin with something else");
            Err(MatrixError::internal())
        }
    }
}

/// Check that `event` is a `membership` event of a user of `origin` about
/// themselves at the ids in the path, and run it through the room
/// server's pipeline like any received PDU (DESIGN.md invariant 4). Its id
/// when the room server accepted it (`/send_join`, `/send_leave`).
pub(super) async fn submit_membership(
    state: &FederationState,
    origin: OwnedServerName,
    room_id: &OwnedRoomId,
    event_id: &str,
    event: &Value,
    membership: &str,
) -> Result<OwnedEventId, MatrixError> {
    check_acl(state, &origin, room_id).await?;
    let event_id = OwnedEventId::try_from(event_id)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid event id: {event_id}")))?;
    check_membership(event, room_id, &origin, membership)?;
    let room_version =
        match query_room_server(state, room_id.as_str(), &QueryRequest::RoomVersion { room_id: room_id.clone() })
            .await?
        {
            QueryOk::RoomVersion { room_version } => room_version,
            other => return Err(unexpected(other)),
        };
    if event_id_of(event, &room_version)? != event_id {
        return Err(MatrixError::bad_json("The event id in the path is not the event's id"));
    }

    let request = InputRequest::InputPdus(InputPdus {
        origin: origin.clone(),
        room_id: room_id.clone(),
        kind: PduKind::Timeline,
        pdus: vec![event.clone()],
    });
    let reply: InputReply =
        state.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await.map_err(bus_error)?;
    let outcome = match reply? {
        InputOk::PdusProcessed { results } if results.len() == 1 => results.into_iter().next().expect("one").outcome,
        other => {
            tracing::error!(?other, "room server answered InputPdus with something else");
            return Err(MatrixError::internal());
        }
    };
    match outcome {
        PduOutcome::Accepted => {
            relay(state, &origin, room_id, &event_id, event).await?;
            Ok(event_id)
        }
        PduOutcome::AlreadyKnown => Ok(event_id),
        PduOutcome::Rejected { reason } | PduOutcome::SoftFailed { reason } => {
            Err(MatrixError::forbidden(format!("The {membership} event was refused: {reason}")))
        }
    }
}

/// Queue a membership event `origin` handed this server for every other
/// server in the room: the joining (leaving, knocking) server knows only
/// this one, so the spec has the resident server pass the event on.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms>
async fn relay(
    state: &FederationState,
    origin: &OwnedServerName,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
    event: &Value,
) -> Result<(), MatrixError> {
    let db_error = |error: myelin_storage::sqlx::Error| {
        tracing::error!(%error, "queueing a relayed membership event failed");
        MatrixError::internal()
    };
    let ours = state.keys.server_name();
    let destinations = store::joined_servers(&state.db, room_id.as_str()).await.map_err(db_error)?;
    let destinations: Vec<String> =
        destinations.into_iter().filter(|server| server != ours && server != origin.as_str()).collect();
    let pdu = event.to_string();
    for destination in &destinations {
        store::enqueue(&state.db, destination, event_id.as_str(), &pdu).await.map_err(db_error)?;
    }
    for destination in &destinations {
        state.sender.wake(destination);
    }
    Ok(())
}

/// The event claims to be `origin`'s user changing their own membership
/// in `room_id` to `membership`.
fn check_membership(
    event: &Value,
    room_id: &OwnedRoomId,
    origin: &OwnedServerName,
    membership: &str,
) -> Result<(), MatrixError> {
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    if field("room_id") != Some(room_id.as_str()) {
        return Err(MatrixError::bad_json("The event's room_id is not the room in the path"));
    }
    let is_own = field("type") == Some("m.room.member")
        && event.pointer("/content/membership").and_then(Value::as_str) == Some(membership)
        && field("state_key").is_some()
        && field("state_key") == field("sender");
    if !is_own {
        return Err(MatrixError::bad_json(format!("The event is not a user's {membership} event")));
    }
    let sender = field("sender").and_then(|sender| OwnedUserId::try_from(sender).ok());
    if sender.is_none_or(|sender| sender.server_name().as_str() != origin.as_str()) {
        return Err(MatrixError::forbidden(format!("The user does not belong to {origin}")));
    }
    Ok(())
}
