//! Requests to the room server over the bus. Its `MatrixError`s reach the
//! client unchanged; bus failures become `M_UNKNOWN` (see `error.rs`).

use myelin_bus::Bus;
use myelin_roomserver::api::{
    CreateRoom, CurrentMembership, INPUT_TOPIC, InputOk, InputReply, InputRequest, QUERY_TOPIC, QueryOk, QueryReply,
    QueryRequest, REQUEST_TIMEOUT, Reader, SendEvent, StoredEvent, UpgradeRoom,
};
use myelin_types::ErrorCode;
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde_json::Value;

use crate::error::{ClientApiError, Result};

async fn input(bus: &Bus, key: &str, request: &InputRequest) -> Result<InputOk> {
    let reply: InputReply = bus.request_json(INPUT_TOPIC, key, request, REQUEST_TIMEOUT).await?;
    Ok(reply?)
}

async fn query(bus: &Bus, key: &str, request: &QueryRequest) -> Result<QueryOk> {
    let reply: QueryReply = bus.request_json(QUERY_TOPIC, key, request, REQUEST_TIMEOUT).await?;
    Ok(reply?)
}

pub async fn create_room(bus: &Bus, request: CreateRoom) -> Result<OwnedRoomId> {
    let key = request.creator.to_string();
    match input(bus, &key, &InputRequest::CreateRoom(request)).await? {
        InputOk::RoomCreated { room_id } => Ok(room_id),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.input")),
    }
}

/// The replacement room's id.
pub async fn upgrade_room(bus: &Bus, request: UpgradeRoom) -> Result<OwnedRoomId> {
    let key = request.room_id.to_string();
    match input(bus, &key, &InputRequest::UpgradeRoom(request)).await? {
        InputOk::RoomUpgraded { replacement_room } => Ok(replacement_room),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.input")),
    }
}

pub async fn send_event(bus: &Bus, request: SendEvent) -> Result<OwnedEventId> {
    let key = request.room_id.to_string();
    match input(bus, &key, &InputRequest::SendEvent(request)).await? {
        InputOk::EventSent { event_id } => Ok(event_id),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.input")),
    }
}

pub async fn room_state(
    bus: &Bus,
    room_id: &OwnedRoomId,
    requester: &OwnedUserId,
    event_type: Option<&str>,
    state_key: Option<&str>,
) -> Result<Vec<StoredEvent>> {
    let request = QueryRequest::RoomState {
        room_id: room_id.clone(),
        requester: requester.clone(),
        event_type: event_type.map(str::to_owned),
        state_key: state_key.map(str::to_owned),
    };
    match query(bus, room_id.as_str(), &request).await? {
        QueryOk::State { events } => Ok(events),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

/// `user_id`'s current membership of the room, `None` if it has none.
pub async fn membership(bus: &Bus, room_id: &OwnedRoomId, user_id: &OwnedUserId) -> Result<Option<CurrentMembership>> {
    let request = QueryRequest::Membership { room_id: room_id.clone(), user_id: user_id.clone() };
    match query(bus, room_id.as_str(), &request).await? {
        QueryOk::Membership { current } => Ok(current),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

/// The event as `user_id` may see it: `M_NOT_FOUND` when it is not in the
/// room, `M_FORBIDDEN` when it is hidden from them.
pub async fn user_event(
    bus: &Bus,
    user_id: &OwnedUserId,
    room_id: &OwnedRoomId,
    event_id: &OwnedEventId,
) -> Result<StoredEvent> {
    let request =
        QueryRequest::UserEvent { user_id: user_id.clone(), room_id: room_id.clone(), event_id: event_id.clone() };
    match query(bus, room_id.as_str(), &request).await? {
        QueryOk::ServerEvents { mut events, .. } if events.len() == 1 => Ok(events.remove(0)),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

/// The nearest event `reader` may see at or after (`forward`) or at or
/// before `ts`; `M_NOT_FOUND` when none.
pub async fn timestamp_to_event(
    bus: &Bus,
    room_id: &OwnedRoomId,
    ts: i64,
    forward: bool,
    reader: Reader,
) -> Result<(OwnedEventId, i64)> {
    let request = QueryRequest::TimestampToEvent { room_id: room_id.clone(), ts, forward, reader };
    match query(bus, room_id.as_str(), &request).await? {
        QueryOk::EventAt { event_id, origin_server_ts } => Ok((event_id, origin_server_ts)),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

/// The room's version, `M_NOT_FOUND` for a room this server does not have.
pub async fn room_version(bus: &Bus, room_id: &OwnedRoomId) -> Result<String> {
    match query(bus, room_id.as_str(), &QueryRequest::RoomVersion { room_id: room_id.clone() }).await? {
        QueryOk::RoomVersion { room_version } => Ok(room_version),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

pub async fn joined_rooms(bus: &Bus, user_id: &OwnedUserId) -> Result<Vec<OwnedRoomId>> {
    match query(bus, user_id.as_str(), &QueryRequest::JoinedRooms { user_id: user_id.clone() }).await? {
        QueryOk::JoinedRooms { room_ids } => Ok(room_ids),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

pub async fn invited_rooms(bus: &Bus, user_id: &OwnedUserId) -> Result<Vec<OwnedRoomId>> {
    match query(bus, user_id.as_str(), &QueryRequest::InvitedRooms { user_id: user_id.clone() }).await? {
        QueryOk::InvitedRooms { room_ids } => Ok(room_ids),
        _ => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}

/// One room of a space as `reader` may see it: its summary and whether it
/// is accessible; `None` for a room this server does not have.
pub async fn space_room(bus: &Bus, room_id: &OwnedRoomId, reader: Reader) -> Result<Option<(Value, bool)>> {
    let request = QueryRequest::SpaceRoom { room_id: room_id.clone(), reader };
    let reply: QueryReply = bus.request_json(QUERY_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await?;
    match reply {
        Ok(QueryOk::SpaceRoom { room, accessible }) => Ok(Some((room, accessible))),
        Err(error) if error.errcode == ErrorCode::NotFound => Ok(None),
        Err(error) => Err(error.into()),
        Ok(_) => Err(ClientApiError::UnexpectedReply("roomserver.query")),
    }
}
