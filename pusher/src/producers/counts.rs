//! `pusher.counts`: a user's whole current counts in one room, read back
//! after the change that moved them is committed.

use myelin_bus::Bus;
use myelin_types::ruma::{OwnedRoomId, OwnedUserId};

use crate::PusherError;
use crate::api::{COUNTS_TOPIC, RoomCounts};
use crate::storage::{Counts, Storage};

/// One user's counts after a receipt.
pub async fn publish(bus: &Bus, storage: &Storage, user_id: &str, room_id: &str) -> Result<(), PusherError> {
    publish_many(bus, storage, room_id, &[user_id]).await
}

/// The counts of everyone an event notified: one read and one append for
/// all of them, as a big room's message moves hundreds of counts at once.
pub async fn publish_many(bus: &Bus, storage: &Storage, room_id: &str, users: &[&str]) -> Result<(), PusherError> {
    if users.is_empty() {
        return Ok(());
    }
    let room = OwnedRoomId::try_from(room_id).map_err(|e| PusherError::Corrupt(e.to_string()))?;
    let records = storage
        .counts_in_room(room_id, users)
        .await?
        .into_iter()
        .map(|(user, by_thread)| Ok((user.clone(), room_counts(&user, room.clone(), by_thread)?)))
        .collect::<Result<Vec<_>, PusherError>>()?;
    bus.produce_json_batch(COUNTS_TOPIC, &records).await?;
    Ok(())
}

fn room_counts(user_id: &str, room_id: OwnedRoomId, by_thread: Counts) -> Result<RoomCounts, PusherError> {
    let user_id = OwnedUserId::try_from(user_id).map_err(|e| PusherError::Corrupt(e.to_string()))?;
    let mut counts =
        RoomCounts { user_id, room_id, notification_count: 0, highlight_count: 0, threads: Default::default() };
    for (thread, c) in by_thread {
        counts.notification_count += c.notification_count;
        counts.highlight_count += c.highlight_count;
        if !thread.is_empty() {
            counts.threads.insert(thread, c);
        }
    }
    Ok(counts)
}
