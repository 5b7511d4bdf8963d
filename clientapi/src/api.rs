//! What the client API publishes about accounts and devices, and the token
//! lookup it answers, so that other components (sync, pusher) can
//! authenticate requests without reading its tables; also account data
//! changes and the typing and receipt EDUs that clients send it.
//! [`TokenResolver`] is the client side of the token lookup.

mod token_resolver;

use std::collections::BTreeMap;
use std::time::Duration;

use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Logins and logouts. Key: user id.
pub const DEVICES_TOPIC: &str = "clientapi.devices";
/// Token lookups. Key: the token hash.
pub const QUERY_TOPIC: &str = "clientapi.query";

pub use token_resolver::{Caller, EvictRevokedTokens, ResolveError, TokenResolver};

pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A record on [`DEVICES_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeviceEvent {
    /// A device received a new access token (login or registration).
    LoggedIn { user_id: OwnedUserId, device_id: String },
    /// Tokens with these hashes stop working now.
    TokensRevoked { user_id: OwnedUserId, token_hashes: Vec<String> },
}

/// A request on [`QUERY_TOPIC`]; the reply is a [`QueryReply`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QueryRequest {
    /// Who owns the access token with this hash (see
    /// `myelin_types::random::token_hash`), or whom the application service
    /// holding it asserts with the request's `user_id` and `device_id`
    /// query parameters.
    Whoami {
        token_hash: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
    },
}

/// The identity, or the error the client gets (`M_UNKNOWN_TOKEN` for a
/// token nobody holds, `M_FORBIDDEN` for an assertion refused).
pub type QueryReply = Result<Identity, MatrixError>;

/// The user and device behind an access token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// A guest account: it may call only the endpoints the spec opens to
    /// guests (<https://spec.matrix.org/v1.16/client-server-api/#guest-access>).
    #[serde(default)]
    pub is_guest: bool,
    /// A server admin (registered as one through the shared-secret API).
    #[serde(default)]
    pub is_admin: bool,
    /// When the token expires (bus clock milliseconds), for tokens issued
    /// with a refresh token; [`TokenResolver`] refuses it from then on.
    #[serde(default)]
    pub expires_ms: Option<u64>,
    /// The id of the application service acting as this user, when the
    /// request carried its `as_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_service: Option<String>,
}

/// Which room a local alias names, for the federation API's
/// `/query/directory`. Key: the alias. The reply is an [`AliasReply`].
pub const ALIAS_QUERY_TOPIC: &str = "clientapi.aliases";

/// A request on [`ALIAS_QUERY_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AliasQuery {
    /// An alias of this server.
    pub alias: String,
}

/// The room the alias names, `None` if it names none.
pub type AliasReply = Option<OwnedRoomId>;

/// A page of this server's public room directory, for the federation
/// API's `/publicRooms`. Key: the asking server. The reply is a
/// [`PublicRoomsReply`].
pub const PUBLIC_ROOMS_TOPIC: &str = "clientapi.publicrooms";

/// A request on [`PUBLIC_ROOMS_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicRoomsQuery {
    /// Rooms per page; none or 0: as many as one page holds.
    pub limit: Option<i64>,
    /// A `next_batch` or `prev_batch` of an earlier page.
    pub since: Option<String>,
    /// Matched against the name, topic and canonical alias.
    pub search: Option<String>,
    /// Only rooms of these types (`None` inside: rooms without a type);
    /// absent: every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_types: Option<Vec<Option<String>>>,
}

/// The page as `/publicRooms` answers it, or why the query is invalid.
pub type PublicRoomsReply = Result<Value, myelin_types::MatrixError>;

/// A local user's public profile, for the federation API's
/// `/query/profile`. Key: the user id. The reply is a [`ProfileReply`].
pub const PROFILE_QUERY_TOPIC: &str = "clientapi.profiles";

/// A request on [`PROFILE_QUERY_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileQuery {
    /// A user of this server.
    pub user_id: OwnedUserId,
}

/// The user's profile fields, `None` when there is no such account.
pub type ProfileReply = Option<PublicProfile>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicProfile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Every other field (`m.tz` and custom ones), by name.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
}

/// Whose OpenID token this is, for the federation API's
/// `/openid/userinfo`. Key: the token hash. The reply is an [`OpenIdReply`].
pub const OPENID_QUERY_TOPIC: &str = "clientapi.openid";

/// A request on [`OPENID_QUERY_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenIdQuery {
    /// `myelin_types::random::token_hash` of the token.
    pub token_hash: String,
}

/// The token's user, `None` when the token is unknown or expired.
pub type OpenIdReply = Option<OwnedUserId>;

/// Account data changes. Key: user id.
pub const ACCOUNT_DATA_TOPIC: &str = "clientapi.accountdata";
/// Typing notifications. Key: room id.
pub const TYPING_TOPIC: &str = "edu.typing";
/// Read receipts. Key: room id.
pub const RECEIPT_TOPIC: &str = "edu.receipt";

/// End-to-end key changes of devices. Key: user id.
pub const KEY_CHANGE_TOPIC: &str = "clientapi.keychange";

/// A record on [`KEY_CHANGE_TOPIC`]: one device's key state after an
/// upload or a claim, whole (not a delta), so applying it twice changes
/// nothing. An empty `device_id` is a change of the user's keys as a whole
/// (cross-signing keys, signatures), with no counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyChange {
    pub user_id: OwnedUserId,
    pub device_id: String,
    /// Unclaimed one-time keys per algorithm.
    pub one_time_key_counts: BTreeMap<String, u64>,
    /// Algorithms whose fallback key has not been claimed.
    pub unused_fallback_key_types: Vec<String>,
    /// The device's identity keys changed, so users who share a room with
    /// `user_id` must fetch them again (`device_lists.changed`).
    pub device_keys_changed: bool,
}

/// To-device messages. Key: the recipient's user id. A message for a
/// user of another server names the device as its sender gave it (`*`
/// included): the federation API sends it on; local users' sync ignores it.
pub const TO_DEVICE_TOPIC: &str = "edu.todevice";

/// To-device messages that arrived over federation for local users, a
/// [`ToDeviceMessage`] each, `device_id` possibly `*`: the client API,
/// which knows the devices, expands them onto [`TO_DEVICE_TOPIC`]. Key:
/// the recipient's user id.
pub const REMOTE_TO_DEVICE_TOPIC: &str = "federationapi.todevice";

/// A record on [`TO_DEVICE_TOPIC`]: one message for one device (`*` is
/// expanded to the user's devices before publishing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToDeviceMessage {
    pub sender: OwnedUserId,
    pub event_type: String,
    pub user_id: OwnedUserId,
    pub device_id: String,
    pub content: Value,
    /// The same for a retried request (sender, sending device, transaction
    /// id, recipient device), so consumers store a message once.
    pub message_id: String,
}

/// A record on [`ACCOUNT_DATA_TOPIC`]: the new content of one account data
/// entry, published after it is committed. Records carry the whole content
/// (not a patch), so applying one twice changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountDataUpdate {
    pub user_id: OwnedUserId,
    /// `None` for global account data.
    pub room_id: Option<OwnedRoomId>,
    pub data_type: String,
    pub content: Value,
}

/// Rooms users forgot (`/forget`). Key: user id.
pub const FORGOTTEN_TOPIC: &str = "clientapi.forgotten";

/// Accounts deactivated with `erase`. Key: the user id.
pub const ERASED_TOPIC: &str = "clientapi.erased";

/// A record on [`ERASED_TOPIC`]: `user_id` asked for their content to be
/// erased, so whoever was not joined to a room when one of their events
/// was sent gets only its redacted form from now on.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountdeactivate>
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    pub user_id: OwnedUserId,
}

/// A record on [`FORGOTTEN_TOPIC`]: `user_id` forgot the room as of its
/// membership event `event_id` (a leave or ban), so the room and its
/// history up to that event are no longer served to them. Keyed by the
/// event rather than a time, so it holds even when it arrives before (or
/// after a rejoin following) that event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomForgotten {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
}

/// A record on [`TYPING_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypingUpdate {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    pub typing: bool,
    /// When the typing state lapses, in bus clock milliseconds.
    pub expires_ms: u64,
}

/// A record on [`RECEIPT_TOPIC`]: `user_id` has read up to `event_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptUpdate {
    pub room_id: OwnedRoomId,
    pub user_id: OwnedUserId,
    /// `m.read` or `m.read.private` (seen only by its owner).
    pub receipt_type: String,
    pub event_id: OwnedEventId,
    pub thread_id: Option<String>,
    pub ts: u64,
}

/// Local users' end-to-end keys, for the federation API's
/// `/user/devices`, `/user/keys/query` and `/user/keys/claim`. Key: the
/// asking server. The reply is a [`LocalKeysReply`].
pub const LOCAL_KEYS_TOPIC: &str = "clientapi.keys";

/// A request on [`LOCAL_KEYS_TOPIC`]; every user named is a local user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LocalKeysRequest {
    /// Every device of the user (with its keys, if it uploaded any, and
    /// its display name) and the user's master and self-signing keys.
    Devices { user_id: OwnedUserId },
    /// Device keys (all devices for an empty list), master and
    /// self-signing keys: the body of a `/user/keys/query` answer.
    Query { device_keys: BTreeMap<OwnedUserId, Vec<String>> },
    /// Claim one key per device of the algorithm given: the body of a
    /// `/user/keys/claim` answer.
    Claim { one_time_keys: BTreeMap<OwnedUserId, BTreeMap<String, String>> },
}

/// The answer to a [`LocalKeysRequest`]: for `Devices`, a
/// [`LocalDevices`]; otherwise the federation answer's JSON body.
pub type LocalKeysReply = Value;

/// The answer to [`LocalKeysRequest::Devices`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalDevices {
    /// `{device_id, keys?, device_display_name?}` each, by device id.
    pub devices: Vec<Value>,
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
}

/// Other servers' users' keys, asked of the federation API for the client
/// API's `/keys/query` and `/keys/claim`. Key: the server asked. The reply
/// is a [`RemoteKeysReply`]. Defined here, by the asker, so that the
/// dependency between the two crates points one way.
pub const REMOTE_KEYS_TOPIC: &str = "federationapi.keys";

/// A request on [`REMOTE_KEYS_TOPIC`]: `body` goes to `server_name` as the
/// body of `/user/keys/query` or `/user/keys/claim`, and the answer must
/// come back within `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteKeysRequest {
    Query { server_name: String, body: Value, timeout_ms: u64 },
    Claim { server_name: String, body: Value, timeout_ms: u64 },
}

/// The server's answer, unchecked (the client API keeps only what is for
/// the users and devices it asked about), or why there is none.
pub type RemoteKeysReply = Result<Value, String>;

/// Presence changes: local users' (from the sync API, for the federation
/// API to send on) and other servers' users' (from the federation API, for
/// the sync API to show). Key: user id.
pub const PRESENCE_TOPIC: &str = "edu.presence";

/// A record on [`PRESENCE_TOPIC`]: a user's whole presence, so applying it
/// twice changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceUpdate {
    pub user_id: OwnedUserId,
    /// `online`, `unavailable` or `offline`.
    pub presence: String,
    pub status_msg: Option<String>,
    /// When the user was last active, in bus clock milliseconds.
    pub last_active_ts: u64,
}

/// The media store is shared storage: the client API writes uploads there
/// and the federation API reads them for other servers and writes the files
/// it fetches from them, each under an id the client API chose. A
/// deployment that splits the two mounts the same media directory in both.
pub use crate::media::{MediaStore, content_disposition};
/// Thumbnails are made the same way for clients and for other servers.
pub use crate::thumbnail::{Method as ThumbnailMethod, thumbnail};

/// What is known about a local file, for the federation API's
/// `/media/download` and `/media/thumbnail` (the bytes it reads from the
/// [`MediaStore`]). Key: the media id. The reply is a [`MediaReply`].
pub const MEDIA_QUERY_TOPIC: &str = "clientapi.media";

/// A request on [`MEDIA_QUERY_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaQuery {
    /// A media id of this server.
    pub media_id: String,
}

/// The file's metadata, `None` when this server has no such upload.
pub type MediaReply = Option<MediaInfo>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub content_type: String,
    pub filename: Option<String>,
}

/// Another server's file, fetched by the federation API for the client
/// API's downloads and thumbnails. Key: the server asked. The reply is a
/// [`RemoteMediaReply`].
pub const REMOTE_MEDIA_TOPIC: &str = "federationapi.media";

/// A request on [`REMOTE_MEDIA_TOPIC`]: fetch `mxc://{server_name}/{media_id}`
/// and write it into the [`MediaStore`] as `file_id`, refusing anything
/// larger than `max_size` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMediaRequest {
    pub server_name: OwnedServerName,
    pub media_id: String,
    pub file_id: String,
    pub max_size: u64,
}

/// The stored file's metadata and size, or the error for the client.
pub type RemoteMediaReply = Result<RemoteMedia, MatrixError>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteMedia {
    pub info: MediaInfo,
    pub size: u64,
}

/// Another server's user's profile (`/query/profile`), for the client
/// API's `/profile`. Key: the user id. The reply is a [`RemoteProfileReply`].
pub const REMOTE_PROFILE_TOPIC: &str = "federationapi.profiles";

/// A request on [`REMOTE_PROFILE_TOPIC`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteProfileQuery {
    pub user_id: OwnedUserId,
}

/// The profile, or the error for the client (`M_NOT_FOUND` for no such user).
pub type RemoteProfileReply = Result<PublicProfile, MatrixError>;
