//! What the client API publishes about accounts and devices, and the token
//! lookup it answers, so that other components (sync, pusher) can
//! authenticate requests without reading its tables.

use std::time::Duration;

use myelin_types::ruma::OwnedUserId;
use serde::{Deserialize, Serialize};

/// Logins and logouts. Key: user id.
pub const DEVICES_TOPIC: &str = "clientapi.devices";
/// Token lookups. Key: the token hash.
pub const QUERY_TOPIC: &str = "clientapi.query";

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
    /// Who owns the access token with this hash (see `myelin_types::random::token_hash`).
    Whoami { token_hash: String },
}

pub type QueryReply = Option<Identity>;

/// The user and device behind an access token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub user_id: OwnedUserId,
    pub device_id: String,
}
