//! Which member events each device was sent by a lazy-loading `/sync`, so
//! that later syncs may leave them out (`include_redundant_members: false`).
//! A member counts as sent only once the client has synced from a token at
//! or past the response that carried it: a response lost on the way is
//! sent again. Kept in memory; a restart or an overfull device forgets, and
//! the members then go out again, which is always correct.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#lazy-loading-room-members>

use std::collections::HashMap;
use std::sync::Mutex;

/// Members remembered per device before it starts afresh.
const MAX_PER_DEVICE: usize = 10_000;

/// (room id, member user id) → (member event id, events position of the response).
type DeviceSent = HashMap<(String, String), (String, i64)>;

#[derive(Default)]
pub struct SentMembers {
    devices: Mutex<HashMap<(String, String), DeviceSent>>,
}

impl SentMembers {
    /// Whether the device has received `event_id` as `member`'s member event
    /// of the room in a response up to `since` (its sync token's events position).
    pub fn received(&self, device: &(String, String), room_id: &str, member: &str, event_id: &str, since: i64) -> bool {
        let devices = self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        devices
            .get(device)
            .and_then(|sent| sent.get(&(room_id.to_owned(), member.to_owned())))
            .is_some_and(|(sent_id, at)| sent_id == event_id && *at <= since)
    }

    /// Remember `members` (member user id, event id) of the room as sent in
    /// the response up to events position `at`.
    pub fn record<'a>(
        &self,
        device: &(String, String),
        room_id: &str,
        members: impl IntoIterator<Item = (&'a str, &'a str)>,
        at: i64,
    ) {
        let mut devices = self.devices.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let sent = devices.entry(device.clone()).or_default();
        for (member, event_id) in members {
            if sent.len() >= MAX_PER_DEVICE {
                sent.clear();
            }
            sent.insert((room_id.to_owned(), member.to_owned()), (event_id.to_owned(), at));
        }
    }
}
