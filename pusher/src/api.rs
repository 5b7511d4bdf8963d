//! What the pusher publishes.
//!
//! - `m.push_rules` account data, on the client API's `clientapi.accountdata`
//!   topic (as an [`AccountDataUpdate`](myelin_clientapi::api::AccountDataUpdate))
//!   so that the sync API serves it like any other account data. The client
//!   API refuses client writes of that type, so the pusher is its only writer.
//! - [`RoomCounts`] on [`COUNTS_TOPIC`]: a user's unread notification and
//!   highlight counts in one room, which `/sync` serves as
//!   `unread_notifications`.

use std::collections::BTreeMap;

use myelin_types::ruma::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};

/// The account data type that carries a user's push rules, with content
/// `{"global": <ruleset>}`.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";

/// Notification counts. Key: user id.
pub const COUNTS_TOPIC: &str = "pusher.counts";

/// A record on [`COUNTS_TOPIC`]: the whole current counts of one user in
/// one room (not a change), so applying one twice changes nothing and the
/// latest record per (user, room) is the truth.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomCounts {
    pub user_id: OwnedUserId,
    pub room_id: OwnedRoomId,
    /// Unread notifications in the room, threads included.
    pub notification_count: u64,
    /// Of those, the ones that highlight.
    pub highlight_count: u64,
    /// Per thread root event id, the part of the counts in that thread
    /// (threads with nothing unread are left out).
    #[serde(default)]
    pub threads: BTreeMap<String, ThreadCounts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadCounts {
    pub notification_count: u64,
    pub highlight_count: u64,
}
