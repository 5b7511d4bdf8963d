//! What sliding sync reads to order, filter and describe a user's rooms:
//! each room's latest activity, single state entries, member counts and
//! the members that name a room without a name.

use std::collections::HashMap;

use myelin_storage::{sqlx, with_db};
use serde_json::Value;

use super::{EventRow, Storage, to_row};
use crate::SyncApiError;

/// One member of a room as a client shows them when the room has no name.
#[derive(Debug, Clone)]
pub struct Hero {
    pub user_id: String,
    /// The content of their member event.
    pub content: Value,
}

impl Storage {
    /// The stream position of the latest timeline event up to `upto` of
    /// every room `user_id` has a membership in.
    pub async fn room_activity(&self, user_id: &str, upto: i64) -> Result<HashMap<String, i64>, SyncApiError> {
        // One index walk per room, from its newest event down.
        let rows: Vec<(String, Option<i64>)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT m.room_id, (SELECT MAX(e.stream_pos) FROM syncapi_events e \
                 WHERE e.room_id = m.room_id AND e.timeline = 1 AND e.stream_pos <= $2) \
                 FROM syncapi_memberships m WHERE m.user_id = $1",
            )
            .bind(user_id)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().filter_map(|(room_id, pos)| Some((room_id, pos?))).collect())
    }

    /// The stream position of the room's latest event up to `upto` of the
    /// types MSC4186 counts as activity a client re-sorts its room list
    /// for (`bump_stamp`): messages, not state or reactions.
    pub async fn bump_stamp(&self, room_id: &str, upto: i64) -> Result<Option<i64>, SyncApiError> {
        let pos: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT MAX(stream_pos) FROM syncapi_events WHERE room_id = $1 AND timeline = 1 \
                 AND stream_pos <= $2 AND event_type IN ('m.room.create', 'm.room.message', \
                 'm.room.encrypted', 'm.sticker', 'm.call.invite', 'm.poll.start', 'm.beacon_info')",
            )
            .bind(room_id)
            .bind(upto)
            .fetch_one(pool)
            .await?
        });
        Ok(pos)
    }

    /// The room's state entry `(event_type, state_key)` after the event at
    /// `at`; `None` when there is none (never set, or removed).
    pub async fn state_event_at(
        &self,
        room_id: &str,
        event_type: &str,
        state_key: &str,
        at: i64,
    ) -> Result<Option<EventRow>, SyncApiError> {
        type Row = (Option<i64>, Option<String>, Option<String>, Option<String>, Option<String>);
        let row: Option<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT e.stream_pos, e.event_id, e.pdu, e.txn_device_id, e.txn_id \
                 FROM syncapi_state_log l LEFT JOIN syncapi_events e ON e.event_id = l.event_id \
                 WHERE l.room_id = $1 AND l.event_type = $2 AND l.state_key = $3 AND l.stream_pos <= $4 \
                 ORDER BY l.stream_pos DESC LIMIT 1",
            )
            .bind(room_id)
            .bind(event_type)
            .bind(state_key)
            .bind(at)
            .fetch_optional(pool)
            .await?
        });
        match row {
            Some((Some(pos), Some(event_id), Some(pdu), device, txn)) => {
                to_row((pos, event_id, pdu, device, txn)).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// How many users are joined to the room now, and how many invited.
    pub async fn member_counts(&self, room_id: &str) -> Result<(i64, i64), SyncApiError> {
        let rows: Vec<(String, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT membership, COUNT(*) FROM syncapi_memberships \
                 WHERE room_id = $1 AND membership IN ('join', 'invite') GROUP BY membership",
            )
            .bind(room_id)
            .fetch_all(pool)
            .await?
        });
        let count = |wanted: &str| rows.iter().find(|(m, _)| m == wanted).map_or(0, |(_, n)| *n);
        Ok((count("join"), count("invite")))
    }

    /// Up to `limit` members of the room other than `user_id`, in the
    /// order they got their membership: joined or invited ones, or, only
    /// when there are none, those who left or were banned.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync> (`m.heroes`)
    pub async fn heroes(&self, room_id: &str, user_id: &str, limit: i64) -> Result<Vec<Hero>, SyncApiError> {
        let rows: Vec<(String, String, bool)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT m.user_id, e.pdu, m.membership IN ('join', 'invite') AS present FROM syncapi_memberships m \
                 JOIN syncapi_events e ON e.event_id = m.event_id \
                 WHERE m.room_id = $1 AND m.user_id <> $2 AND m.membership IN ('join', 'invite', 'leave', 'ban') \
                 ORDER BY present DESC, m.stream_pos \
                 LIMIT $3",
            )
            .bind(room_id)
            .bind(user_id)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        let any_present = rows.first().is_some_and(|(_, _, present)| *present);
        rows.into_iter()
            .filter(|(_, _, present)| *present == any_present)
            .map(|(user_id, pdu, _)| {
                let pdu: Value = serde_json::from_str(&pdu)
                    .map_err(|e| SyncApiError::Corrupt(format!("member event of {user_id}: {e}")))?;
                Ok(Hero { user_id, content: pdu.get("content").cloned().unwrap_or(Value::Null) })
            })
            .collect()
    }
}
