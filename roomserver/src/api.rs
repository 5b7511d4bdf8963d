//! What the room server reads and writes on the bus: its input commands and
//! their replies, its queries, and its output records. Other components
//! depend on these types only, never on the room server's internals.

use std::time::Duration;

use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId};
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
    /// PDUs another server sent (`/send`, `/backfill`, `/get_missing_events`,
    /// `/event`, invites). Each goes through the validation pipeline alone
    /// (DESIGN.md invariants 4 and 5); the reply is [`InputOk::PdusProcessed`].
    InputPdus(InputPdus),
    /// The result of joining a room through another server: the join event
    /// this server signed and the `send_join` response. The room server
    /// validates the state and auth chain and starts the room from them;
    /// the reply is [`InputOk::EventSent`] with the join event's id.
    JoinedRemoteRoom(JoinedRemoteRoom),
    /// Fetch history older than the earliest events this server has of a
    /// room joined over federation (`/backfill` from servers in the room)
    /// and take it through the pipeline as [`PduKind::Backfill`]. The
    /// reply is [`InputOk::PdusProcessed`] for the PDUs received (none when
    /// the room's history is complete here); accepted ones are emitted
    /// `historical`, newest first, so that readers placing each before
    /// what they have keep them in order.
    Backfill(Backfill),
    /// Another server invites a local user (`/invite`): the PDU goes
    /// through the state-free checks, must be an invite of a local user by
    /// a user of `origin`, and is then signed by this server. For a room
    /// this server is not in, the invite is kept as an outlier with
    /// `invite_room_state` in its `unsigned` and emitted, so the invitee
    /// sees it; in a room it is in, the event arrives again over `/send`.
    /// The reply is [`InputOk::InviteSigned`].
    ReceivedInvite(ReceivedInvite),
    /// Another server's user joins a restricted room through this server
    /// (`/send_join` of a join whose `join_authorised_via_users_server`
    /// names a user of this server): the join must be one of a user of
    /// `origin`, the user must be let in by the join rules as this server
    /// sees them, and the content hash must match; then this server signs
    /// it. Nothing is stored: the signed join then goes in as
    /// [`InputRequest::InputPdus`]. The reply is [`InputOk::JoinSigned`].
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#restricted-rooms>
    ReceivedJoin(ReceivedJoin),
    /// A local user knocked on a room this server is not in, through
    /// another server (`/make_knock`, `/send_knock`, done by the federation
    /// API). The knock is kept as an outlier with the resident server's
    /// `knock_room_state` in its `unsigned` and emitted, so the knocker
    /// sees the room under `rooms.knock`; the reply is [`InputOk::EventSent`].
    KnockedRemoteRoom(KnockedRemoteRoom),
    /// Replace a room with a new one of another version: the new room with
    /// the old one's transferable state and bans, the old room's local
    /// canonical alias moved over, a tombstone in the old room and its power
    /// levels restricted, all in one transaction. Key: the old room's id.
    /// The reply is [`InputOk::RoomUpgraded`].
    UpgradeRoom(UpgradeRoom),
}

/// `POST /rooms/{roomId}/upgrade`, already validated for shape by the client API.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidupgrade>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRoom {
    pub room_id: OwnedRoomId,
    /// A local user with the power to send `m.room.tombstone` in the old
    /// room; the new room's creator.
    pub requester: OwnedUserId,
    /// The requester's profile for their join of the new room, as with
    /// [`CreateRoom::creator_profile`].
    #[serde(default)]
    pub requester_profile: Map<String, Value>,
    pub new_version: String,
    /// More creators of the new room, in versions that have them (12 on);
    /// ignored in others. Those of the old room are not carried over.
    #[serde(default)]
    pub additional_creators: Vec<OwnedUserId>,
}

/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#knocking-upon-a-room>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnockedRemoteRoom {
    pub room_id: OwnedRoomId,
    pub room_version: String,
    pub event_id: OwnedEventId,
    /// The knock as this server signed it and the resident server accepted it.
    pub event: Value,
    /// Stripped state events the resident server answered with.
    pub knock_room_state: Vec<Value>,
}

/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_joinroomideventid>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedJoin {
    /// The joining server (the X-Matrix origin).
    pub origin: OwnedServerName,
    pub room_id: OwnedRoomId,
    /// The join event as received, in federation format.
    pub event: Value,
}

/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2inviteroomideventid>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceivedInvite {
    /// The inviting server (the X-Matrix origin).
    pub origin: OwnedServerName,
    pub room_id: OwnedRoomId,
    pub room_version: String,
    /// The invite event as received, in federation format.
    pub event: Value,
    /// Stripped state events the inviting server chose to share.
    pub invite_room_state: Vec<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backfill {
    pub room_id: OwnedRoomId,
    /// How many events to ask for (at most [`MAX_SERVER_READ_EVENTS`]).
    pub limit: u32,
}

pub type InputReply = Result<InputOk, MatrixError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputOk {
    RoomCreated {
        room_id: OwnedRoomId,
    },
    RoomUpgraded {
        replacement_room: OwnedRoomId,
    },
    EventSent {
        event_id: OwnedEventId,
    },
    /// One result per PDU of an [`InputPdus`], in the order received.
    PdusProcessed {
        results: Vec<PduResult>,
    },
    /// The invite event of a [`ReceivedInvite`] with this server's signature added.
    InviteSigned {
        event: Value,
    },
    /// The join event of a [`ReceivedJoin`] with this server's signature added.
    JoinSigned {
        event: Value,
    },
}

/// PDUs received over federation, all claiming to be in `room_id`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputPdus {
    /// The server that sent them (the X-Matrix origin), not necessarily their author.
    pub origin: OwnedServerName,
    pub room_id: OwnedRoomId,
    /// On the wire as `pdu_kind`: `kind` is [`InputRequest`]'s own tag.
    #[serde(rename = "pdu_kind")]
    pub kind: PduKind,
    /// The PDUs as received, in federation format.
    pub pdus: Vec<Value>,
}

/// Where received PDUs sit in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PduKind {
    /// New events (`/send`, `/get_missing_events`): they may move the current state.
    Timeline,
    /// Old events (`/backfill`): stored and served, never current state, never pushed.
    Backfill,
    /// Events known only by themselves (auth chains, `/event`): not in the timeline.
    Outlier,
}

/// What became of one received PDU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PduResult {
    /// `None` when the PDU was too malformed to compute an id.
    pub event_id: Option<OwnedEventId>,
    pub outcome: PduOutcome,
}

/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum PduOutcome {
    Accepted,
    /// Authorized by its own state but not by the current state: stored, not
    /// in the timeline, not pushed, not a forward extremity.
    SoftFailed {
        reason: String,
    },
    Rejected {
        reason: String,
    },
    /// Seen before; nothing changed.
    AlreadyKnown,
}

/// A remote join, completed by the federation API.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms>
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinedRemoteRoom {
    pub room_id: OwnedRoomId,
    pub room_version: String,
    /// The server that answered `send_join`.
    pub origin: OwnedServerName,
    /// The join event as this server signed it (federation format).
    pub join_event: Value,
    /// `state` of the `send_join` response: the state before the join.
    pub state: Vec<Value>,
    pub auth_chain: Vec<Value>,
}

/// `POST /createRoom`, already validated for shape by the client API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRoom {
    pub creator: OwnedUserId,
    /// The creator's profile (`displayname`, `avatar_url`) for their join
    /// event, so that members see it from the room's first event on.
    #[serde(default)]
    pub creator_profile: Map<String, Value>,
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
    /// The sender is a guest account of this server: its join is refused
    /// (`403 M_FORBIDDEN`) unless the room's `m.room.guest_access` is
    /// `can_join`, checked here against the state the join is built on.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
    #[serde(default)]
    pub sender_is_guest: bool,
    /// The event's `origin_server_ts` instead of now: an application
    /// service's `ts` (timestamp massaging); the event still goes at the
    /// tip of the room.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/application-service-api/#timestamp-massaging>
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_server_ts: Option<u64>,
}

/// Identifies a client's `PUT …/{txnId}`; unique per (user, device, txn id).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnRef {
    pub device_id: String,
    pub txn_id: String,
}

/// Questions the room server asks of the federation API (which answers
/// them). Key: the server name concerned. Defined here, by the asker, so
/// that the dependency between the two crates points one way.
pub const FEDERATION_QUERY_TOPIC: &str = "federationapi.query";

/// A request on [`FEDERATION_QUERY_TOPIC`]; the reply is a [`FederationQueryReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FederationQuery {
    /// The verify keys of `server_name` with their validity, from the key
    /// store, fetched (directly, then from trusted key servers) when one of
    /// `key_ids` is missing or expired. Answered with [`FederationQueryOk::ServerKeys`].
    ServerKeys { server_name: OwnedServerName, key_ids: Vec<String> },
    /// Events missing between what the room server has and `latest`
    /// (`/get_missing_events`), asked of `servers` in turn. Answered with
    /// [`FederationQueryOk::Pdus`], unvalidated.
    MissingEvents {
        room_id: OwnedRoomId,
        servers: Vec<OwnedServerName>,
        earliest: Vec<OwnedEventId>,
        latest: Vec<OwnedEventId>,
        limit: u32,
    },
    /// Single events by id (`/event`), asked of `servers` in turn.
    /// Answered with [`FederationQueryOk::Pdus`], unvalidated.
    Events { room_id: OwnedRoomId, servers: Vec<OwnedServerName>, event_ids: Vec<OwnedEventId> },
    /// The ids of the state before `event_id` and of its auth chain
    /// (`/state_ids`), asked of `servers` in turn, for an event whose
    /// history could not be had. Answered with [`FederationQueryOk::StateIds`].
    StateIds { room_id: OwnedRoomId, servers: Vec<OwnedServerName>, event_id: OwnedEventId },
    /// `from` and the events before them (`/backfill`), asked of `servers`
    /// in turn. Answered with [`FederationQueryOk::Pdus`], unvalidated.
    Backfill { room_id: OwnedRoomId, servers: Vec<OwnedServerName>, from: Vec<OwnedEventId>, limit: u32 },
    /// Leave (or reject the invite to) a room this server is not in, for
    /// local user `user_id`, through `servers` in turn (`/make_leave`, a
    /// leave event built and signed here, `/send_leave`). Answered with
    /// [`FederationQueryOk::Left`].
    Leave { room_id: OwnedRoomId, user_id: OwnedUserId, servers: Vec<OwnedServerName> },
    /// Have the invitee's server countersign an invite this server built
    /// (`/invite` v2). Answered with [`FederationQueryOk::Pdus`] holding the
    /// event as returned, or the invitee's server's refusal.
    Invite {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
        room_version: String,
        event: Value,
        invite_room_state: Vec<Value>,
    },
}

pub type FederationQueryReply = Result<FederationQueryOk, MatrixError>;

/// What the client API asks the federation API to do for local users. Key:
/// the room id (the alias for [`FederationPerform::ResolveAlias`]). A topic of its own, apart from [`FEDERATION_QUERY_TOPIC`],
/// because a join waits on the room server, which itself asks
/// `federationapi.query` for keys while it validates the join. Defined
/// here, beside the room server's contract, so that neither the client API
/// nor the federation API depends on the other.
pub const FEDERATION_PERFORM_TOPIC: &str = "federationapi.perform";

/// How long the client API waits for a remote join: discovery, make_join
/// and send_join through several servers, then validating the room state.
pub const PERFORM_TIMEOUT: Duration = Duration::from_secs(120);

/// A request on [`FEDERATION_PERFORM_TOPIC`]; the reply is a [`FederationPerformReply`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FederationPerform {
    /// Join a room this server is not in, through `servers` in turn
    /// (`/make_join`, then `/send_join`), and hand the result to the room
    /// server as [`InputRequest::JoinedRemoteRoom`]. Answered with
    /// [`FederationPerformOk::Joined`].
    JoinRoom {
        room_id: OwnedRoomId,
        /// A local user.
        user_id: OwnedUserId,
        /// Candidate resident servers, best first.
        servers: Vec<OwnedServerName>,
        /// The join event's content as this server chose it (membership,
        /// profile, reason).
        content: Value,
    },
    /// The room an alias of another server names and servers to join it
    /// through (`/query/directory` on the alias's server). Answered with
    /// [`FederationPerformOk::Alias`]; `M_NOT_FOUND` if it names none.
    ResolveAlias { alias: OwnedRoomAliasId },
    /// Knock on a room this server is not in, through `servers` in turn
    /// (`/make_knock`, then `/send_knock`), and hand the knock to the room
    /// server as [`InputRequest::KnockedRemoteRoom`]. Answered with
    /// [`FederationPerformOk::Knocked`].
    KnockRoom {
        room_id: OwnedRoomId,
        /// A local user.
        user_id: OwnedUserId,
        /// Candidate resident servers, best first.
        servers: Vec<OwnedServerName>,
        /// The knock event's content as this server chose it (membership, reason).
        content: Value,
    },
    /// A room of another server and its children as that server shows
    /// them to this one (`/hierarchy`), asked of `servers` in turn.
    /// Answered with [`FederationPerformOk::Remote`] (the first answer).
    Hierarchy { room_id: OwnedRoomId, servers: Vec<OwnedServerName>, suggested_only: bool },
    /// Another server's public room directory (`/publicRooms`, `POST` when
    /// `filter` is given). Answered with [`FederationPerformOk::Remote`].
    PublicRooms { server: OwnedServerName, limit: Option<i64>, since: Option<String>, filter: Option<Value> },
}

pub type FederationPerformReply = Result<FederationPerformOk, MatrixError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FederationPerformOk {
    Joined {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
    },
    Alias {
        room_id: OwnedRoomId,
        servers: Vec<OwnedServerName>,
    },
    Knocked {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
    },
    /// Another server's answer, as it gave it.
    Remote {
        response: Value,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FederationQueryOk {
    ServerKeys {
        keys: Vec<VerifyKey>,
    },
    Pdus {
        pdus: Vec<Value>,
    },
    /// As another server answered `/state_ids`: nothing checked yet.
    StateIds {
        pdu_ids: Vec<OwnedEventId>,
        auth_chain_ids: Vec<OwnedEventId>,
    },
    /// The leave event a resident server accepted.
    Left {
        room_version: String,
        event_id: OwnedEventId,
        event: Value,
    },
}

/// One signing key of a server and when it may be trusted.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#publishing-keys>
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyKey {
    /// `ed25519:<version>`.
    pub key_id: String,
    /// Unpadded standard base64.
    pub public_key: String,
    /// Current keys: valid for signatures made up to this time (ms), already
    /// capped at 7 days after it was fetched as the spec asks for room v5+.
    pub valid_until_ts: Option<u64>,
    /// Old keys: valid for signatures made before this time (ms).
    pub expired_ts: Option<u64>,
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
    /// Rooms `user_id` is currently invited to (a deactivated account
    /// rejects them). Answered with [`QueryOk::InvitedRooms`].
    InvitedRooms { user_id: OwnedUserId },
    /// `user_id`'s current membership of a room and the event that set it
    /// (`/forget` must tell a left room from a joined or invited one).
    /// Answered with [`QueryOk::Membership`].
    Membership { room_id: OwnedRoomId, user_id: OwnedUserId },
    /// The version of a room this server stores (`M_NOT_FOUND` otherwise).
    /// Answered with [`QueryOk::RoomVersion`].
    RoomVersion { room_id: OwnedRoomId },
    /// An unsigned join event for remote user `user_id` built from the
    /// current state (`/make_join`): prev events are the forward
    /// extremities, auth events are chosen from the current state. Refused
    /// with `M_NOT_FOUND` for an unknown room, `M_INCOMPATIBLE_ROOM_VERSION`
    /// when the room's version is not among `supported_versions`, and
    /// `M_FORBIDDEN` when the current state would not let the user join.
    /// Answered with [`QueryOk::JoinTemplate`].
    MakeJoin { room_id: OwnedRoomId, user_id: OwnedUserId, supported_versions: Vec<String> },
    /// An unsigned leave event for remote user `user_id` (`/make_leave`),
    /// built like [`QueryRequest::MakeJoin`]'s template; `M_FORBIDDEN` when
    /// the current state would not let the user leave (not in the room).
    /// Answered with [`QueryOk::JoinTemplate`].
    MakeLeave { room_id: OwnedRoomId, user_id: OwnedUserId },
    /// An unsigned knock event for remote user `user_id` (`/make_knock`),
    /// built like [`QueryRequest::MakeJoin`]'s template; also
    /// `M_INCOMPATIBLE_ROOM_VERSION` for a room whose version has no
    /// knocking (before v7). Answered with [`QueryOk::JoinTemplate`].
    MakeKnock { room_id: OwnedRoomId, user_id: OwnedUserId, supported_versions: Vec<String> },
    /// The room's stripped state shown to a user outside it (invites and
    /// knocks): create, join rules, name, avatar, canonical alias,
    /// encryption and topic. Answered with [`QueryOk::StrippedState`].
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#stripped-state>
    StrippedState { room_id: OwnedRoomId },
    /// The state before `event_id` and the auth chain of that state and of
    /// the event (`/send_join`, `/state`). Answered with [`QueryOk::StateAndAuthChain`].
    StateAndAuthChain { room_id: OwnedRoomId, event_id: OwnedEventId },
    /// One event of a room as local user `user_id` may see it, judged like
    /// [`QueryRequest::ServerRead`] for that user alone (their membership
    /// at the event, or now for `shared` history). Answered with
    /// [`QueryOk::ServerEvents`]; `M_NOT_FOUND` for an event this server
    /// does not have in that room, `M_FORBIDDEN` when it is hidden from them.
    UserEvent { user_id: OwnedUserId, room_id: OwnedRoomId, event_id: OwnedEventId },
    /// The event nearest `ts` (milliseconds) in the direction asked that
    /// `reader` may see: `/timestamp_to_event` of clients and of other
    /// servers. Answered with [`QueryOk::EventAt`]; `M_NOT_FOUND` for an
    /// unknown room or when no visible event lies that way.
    TimestampToEvent { room_id: OwnedRoomId, ts: i64, forward: bool, reader: Reader },
    /// What another server reads of a room over federation, limited to the
    /// events `server` may see (`myelin_visibility::server_may_see`).
    /// Key: the room id, the event id for [`ServerRead::Event`]. Answered
    /// with [`QueryOk::ServerEvents`]; `M_NOT_FOUND` for an event this
    /// server does not have (in that room), `M_FORBIDDEN` when the event
    /// named is hidden from `server`.
    ServerRead { server: OwnedServerName, read: ServerRead },
    /// Whether the room's current `m.room.server_acl` lets `server` take
    /// part in the room (always, for a room without one or unknown here).
    /// Answered with [`QueryOk::ServerAllowed`].
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#server-access-control-lists-acls>
    ServerAllowed { room_id: OwnedRoomId, server: OwnedServerName },
    /// One room of a space hierarchy from its current state: its summary
    /// with `children_state` and `allowed_room_ids`, and whether `reader`
    /// may see it (joined or invited — for a server, one of its users
    /// joined —, `world_readable`, join rule `public`, `knock` or
    /// `knock_restricted`, or a restricted rule whose allowed rooms it is
    /// joined to; never a banned user). Answered with [`QueryOk::SpaceRoom`];
    /// `M_NOT_FOUND` for a room this server does not have.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
    SpaceRoom { room_id: OwnedRoomId, reader: Reader },
}

/// Who reads, for history visibility: a local user or another server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reader", content = "id", rename_all = "snake_case")]
pub enum Reader {
    User(OwnedUserId),
    Server(OwnedServerName),
}

/// The federation reads of [`QueryRequest::ServerRead`].
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-events>
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "read", rename_all = "snake_case")]
pub enum ServerRead {
    /// `/event`: the event alone.
    Event { event_id: OwnedEventId },
    /// `/state`, `/state_ids`: the state before the event and the auth
    /// chain of that state.
    State { room_id: OwnedRoomId, event_id: OwnedEventId },
    /// `/event_auth`: the event's auth chain (in `events`).
    AuthChain { room_id: OwnedRoomId, event_id: OwnedEventId },
    /// `/backfill`: `from` and the events before them, following
    /// `prev_events`, newest first, at most `limit` (capped at
    /// [`MAX_SERVER_READ_EVENTS`]). Events `server` may not see are left out.
    Backfill { room_id: OwnedRoomId, from: Vec<OwnedEventId>, limit: u32 },
    /// `/get_missing_events`: the events before `latest` (excluded) back
    /// to `earliest` (excluded), not below `min_depth`, oldest first, at
    /// most `limit` (capped at [`MAX_SERVER_READ_EVENTS`]).
    Missing { room_id: OwnedRoomId, earliest: Vec<OwnedEventId>, latest: Vec<OwnedEventId>, limit: u32, min_depth: i64 },
}

/// The most events one `/backfill` or `/get_missing_events` answers with.
pub const MAX_SERVER_READ_EVENTS: u32 = 100;

pub type QueryReply = Result<QueryOk, MatrixError>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryOk {
    State {
        events: Vec<StoredEvent>,
    },
    JoinedRooms {
        room_ids: Vec<OwnedRoomId>,
    },
    InvitedRooms {
        room_ids: Vec<OwnedRoomId>,
    },
    /// `None` when the user has no membership event in the room (or the
    /// room is unknown).
    Membership {
        current: Option<CurrentMembership>,
    },
    RoomVersion {
        room_version: String,
    },
    /// `event` has no `origin`, `origin_server_ts`, hashes or signatures:
    /// the joining (or leaving) server adds them and signs.
    JoinTemplate {
        room_version: String,
        event: Value,
    },
    /// PDUs in federation format, each list in no particular order.
    StateAndAuthChain {
        state: Vec<Value>,
        auth_chain: Vec<Value>,
    },
    /// The answer to a [`QueryRequest::TimestampToEvent`].
    EventAt {
        event_id: OwnedEventId,
        origin_server_ts: i64,
    },
    /// The answer to a [`QueryRequest::ServerRead`]: `auth_chain` is empty
    /// except for [`ServerRead::State`].
    ServerEvents {
        events: Vec<StoredEvent>,
        auth_chain: Vec<StoredEvent>,
    },
    ServerAllowed {
        allowed: bool,
    },
    /// `type`, `state_key`, `sender` and `content` of each event.
    StrippedState {
        events: Vec<Value>,
    },
    /// The answer to a [`QueryRequest::SpaceRoom`]: `room` is a
    /// `SpaceHierarchyRoomsChunk` (its `children_state` holds the
    /// `m.space.child` events with a non-empty `via`, stripped, with
    /// `origin_server_ts`).
    SpaceRoom {
        room: Value,
        accessible: bool,
    },
}

/// A membership (`join`, `invite`, `leave`, `ban`, `knock`) and its event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentMembership {
    pub membership: String,
    pub event_id: OwnedEventId,
    /// Who sent the event: for an invite to a room this server is not in,
    /// the inviter, whose server can be asked to join it.
    pub sender: OwnedUserId,
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
    /// Backfilled history: placed before what consumers already have, so it
    /// belongs in `/messages` but not in incremental `/sync`, and never pushes.
    /// Rejected and soft-failed events never reach this topic.
    #[serde(default)]
    pub historical: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDelta {
    /// State events that entered the current state (including this event
    /// when it is a state event).
    pub added: Vec<StoredEvent>,
    /// `(type, state_key)` entries that left the current state entirely.
    pub removed: Vec<(String, String)>,
}

/// Room versions the room server creates and serves, as `GET /capabilities`
/// advertises them (all stable).
pub const ROOM_VERSIONS: &[&str] = &["10", "11", "12"];
