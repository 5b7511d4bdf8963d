//! What the room server reads and writes on the bus: its input commands and
//! their replies, its queries, and its output records. Other components
//! depend on these types only, never on the room server's internals.

use std::time::Duration;

use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Commands that change rooms. Key: room id (the creator's user id for
/// [`InputRequest::CreateRoom`], whose room id does not exist yet).
pub const INPUT_TOPIC: &str = "roomserver.input";
/// Read-only questions about rooms. Key: room id, or user id for per-user queries.
pub const QUERY_TOPIC: &str = "roomserver.query";
/// Every event the room server accepted, with the state change it made. Key: room id.
pub const OUTPUT_TOPIC: &str = "roomserver.output";

/// How long callers wait for the room server before giving up.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A request on [`INPUT_TOPIC`]; the reply is an [`InputReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRequest {
    CreateRoom(CreateRoom),
    /// Build, sign, auth-check and persist one local event. Membership
    /// changes (join, leave, invite, kick, ban) are `m.room.member` events.
    SendEvent(SendEvent),
}

pub type InputReply = Result<InputOk, MatrixError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputOk {
    RoomCreated { room_id: OwnedRoomId },
    EventSent { event_id: OwnedEventId },
}

/// `POST /createRoom`, already validated for shape by the client API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRoom {
    pub creator: OwnedUserId,
    /// `None`: the server's default version.
    pub room_version: Option<String>,
    /// `private_chat`, `trusted_private_chat` or `public_chat`; `None` picks
    /// from `visibility` as the spec says.
    pub preset: Option<String>,
    /// `public` or `private` (directory publication itself is not here).
    pub visibility: Option<String>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub initial_state: Vec<StateEventSpec>,
    pub creation_content: Option<Map<String, Value>>,
    pub power_level_content_override: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEventSpec {
    #[serde(rename = "type")]
    pub event_type: String,
    #[serde(default)]
    pub state_key: String,
    pub content: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEvent {
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub event_type: String,
    /// `Some` for state events.
    pub state_key: Option<String>,
    pub content: Value,
    /// Client transaction: a repeat with the same one returns the first event id.
    pub txn: Option<TxnRef>,
}

/// Identifies a client's `PUT …/{txnId}`; unique per (user, device, txn id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRef {
    pub device_id: String,
    pub txn_id: String,
}

/// A request on [`QUERY_TOPIC`]; the reply is a [`QueryReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryRequest {
    /// State events of a room as `requester` may see them: the current state
    /// while joined, the state at their leave event after leaving; otherwise
    /// `M_FORBIDDEN`. `event_type`/`state_key` narrow it to matching events.
    RoomState { room_id: OwnedRoomId, requester: OwnedUserId, event_type: Option<String>, state_key: Option<String> },
    /// Rooms `user_id` is currently joined to.
    JoinedRooms { user_id: OwnedUserId },
}

pub type QueryReply = Result<QueryOk, MatrixError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryOk {
    State { events: Vec<StoredEvent> },
    JoinedRooms { room_ids: Vec<OwnedRoomId> },
}

/// A PDU as the room server stores it, with the ids it does not carry itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    /// The full PDU in federation format.
    pub pdu: Value,
}

/// A record on [`OUTPUT_TOPIC`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutputRecord {
    NewRoomEvent(NewRoomEvent),
}

/// An event the room server accepted into the room, in room order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRoomEvent {
    pub event: StoredEvent,
    pub room_version: String,
    /// How the room's current state changed because of this event.
    pub state_delta: StateDelta,
    /// Set when a local client sent it with a transaction id, so that sync
    /// can echo `unsigned.transaction_id` to that device.
    pub txn: Option<TxnRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    /// State events that entered the current state (including this event
    /// when it is a state event).
    pub added: Vec<StoredEvent>,
    /// `(type, state_key)` entries that left the current state entirely.
    pub removed: Vec<(String, String)>,
}
