//! `pusher.counts`: a user's whole current counts in one room, read back
//! after the change that moved them is committed.

use myelin_bus::Bus;
use myelin_types::ruma::{OwnedRoomId, OwnedUserId};

use crate::PusherError;
use crate::api::{COUNTS_TOPIC, RoomCounts};
use crate::storage::Storage;

pub async fn publish(bus: &Bus, storage: &Storage, user_id: &str, room_id: &str) -> Result<(), PusherError> {
    let by_thread = storage.counts(user_id, room_id).await?;
    let corrupt = |e: myelin_types::ruma::IdParseError| PusherError::Corrupt(e.to_string());
    let mut counts = RoomCounts {
        user_id: OwnedUserId::try_from(user_id).map_err(corrupt)?,
        room_id: OwnedRoomId::try_from(room_id).map_err(corrupt)?,
        notification_count: 0,
        highlight_count: 0,
        threads: Default::default(),
    };
    for (thread, c) in by_thread {
        counts.notification_count += c.notification_count;
        counts.highlight_count += c.highlight_count;
        if !thread.is_empty() {
            counts.threads.insert(thread, c);
        }
    }
    bus.produce_json(COUNTS_TOPIC, user_id, &counts).await?;
    Ok(())
}
