//! The pusher's read model of rooms, built from `roomserver.output`: each
//! room's current state (the pusher needs members, their display names,
//! power levels, the name, history visibility and encryption), its events'
//! positions (a per-room counter, for receipts and visibility), and the logs
//! of membership and history visibility changes that the shared visibility
//! rules read. One transaction records an event with everything it caused,
//! notifications and deliveries included, so a redelivered record (its
//! event id already present) changes nothing.

use std::collections::HashMap;

use myelin_storage::{WritePool, sqlx, with_db};
use myelin_visibility::{HistoryChange, HistoryVisibility};
use serde_json::Value;

use super::Storage;
use crate::PusherError;

/// One current state entry.
#[derive(Debug, Clone)]
pub struct StateEntry {
    pub sender: String,
    pub content: Value,
}

/// A room's current state as the pusher knows it.
#[derive(Debug, Default)]
pub struct RoomSnapshot {
    pub room_version: Option<String>,
    /// Position of the room's latest event (0: none yet).
    pub last_pos: i64,
    pub state: HashMap<(String, String), StateEntry>,
}

impl RoomSnapshot {
    pub fn get(&self, event_type: &str, state_key: &str) -> Option<&StateEntry> {
        self.state.get(&(event_type.to_owned(), state_key.to_owned()))
    }

    /// `(user id, membership)` of every member event.
    pub fn memberships(&self) -> impl Iterator<Item = (&str, &str)> {
        self.state.iter().filter(|((t, _), _)| t == "m.room.member").map(|((_, user), entry)| {
            (user.as_str(), entry.content.get("membership").and_then(Value::as_str).unwrap_or_default())
        })
    }
}

/// Everything the pusher reads of a room to evaluate its next event: the
/// current state and the logs the visibility rules need.
#[derive(Debug, Default)]
pub struct RoomModel {
    pub snapshot: RoomSnapshot,
    /// Each user's membership changes, oldest first.
    pub memberships: HashMap<String, Vec<Membership>>,
    /// History visibility changes, oldest first.
    pub history: Vec<HistoryChange>,
}

impl RoomModel {
    /// Entries held, a measure of its memory for the cache's bound.
    pub fn weight(&self) -> usize {
        self.snapshot.state.len() + self.memberships.values().map(Vec::len).sum::<usize>() + self.history.len() + 1
    }
}

/// One change of a user's membership, for the visibility rules.
#[derive(Debug, Clone)]
pub struct Membership {
    pub pos: i64,
    pub membership: String,
}

impl myelin_visibility::MembershipChange for Membership {
    fn pos(&self) -> i64 {
        self.pos
    }
    fn membership(&self) -> &str {
        &self.membership
    }
}

/// A notification to record for one user.
#[derive(Debug, Clone)]
pub struct NewNotification {
    pub user_id: String,
    pub thread_id: String,
    pub highlight: bool,
    pub actions: Value,
}

/// A push gateway request to make, stored before it is sent.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub url: String,
    pub body: Value,
}

/// Everything one `roomserver.output` event changes, written at once.
pub struct EventWrite<'a> {
    pub room_id: &'a str,
    pub room_version: &'a str,
    pub event_id: &'a str,
    pub pos: i64,
    pub ts: i64,
    /// The event in client format, as `/notifications` returns it.
    pub event: Value,
    pub added: Vec<((String, String), StateEntry)>,
    pub removed: Vec<(String, String)>,
    pub memberships: Vec<(String, String)>,
    pub visibility: Option<HistoryVisibility>,
    pub notifications: Vec<NewNotification>,
    pub deliveries: Vec<NewDelivery>,
    pub now_ms: i64,
}

/// `(type, state_key, sender, content)`.
type StateRow = (String, String, String, String);

fn visibility_name(visibility: HistoryVisibility) -> &'static str {
    match visibility {
        HistoryVisibility::Joined => "joined",
        HistoryVisibility::Invited => "invited",
        HistoryVisibility::Shared => "shared",
        HistoryVisibility::WorldReadable => "world_readable",
    }
}

fn parse_visibility(name: &str) -> HistoryVisibility {
    HistoryVisibility::from_content(Some(&serde_json::json!({ "history_visibility": name })))
}

impl Storage {
    pub async fn room(&self, room_id: &str) -> Result<RoomSnapshot, PusherError> {
        let (room, rows): (Option<(String, i64)>, Vec<StateRow>) = with_db!(&self.db, pool => {
            let room = sqlx::query_as("SELECT room_version, last_pos FROM pusher_rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(pool)
                .await?;
            let rows = sqlx::query_as(
                "SELECT event_type, state_key, sender, content FROM pusher_room_state WHERE room_id = $1",
            )
            .bind(room_id)
            .fetch_all(pool)
            .await?;
            (room, rows)
        });
        let mut snapshot = RoomSnapshot::default();
        if let Some((version, last_pos)) = room {
            snapshot.room_version = Some(version);
            snapshot.last_pos = last_pos;
        }
        for (event_type, state_key, sender, content) in rows {
            let content =
                serde_json::from_str(&content).map_err(|e| PusherError::Corrupt(format!("state in {room_id}: {e}")))?;
            snapshot.state.insert((event_type, state_key), StateEntry { sender, content });
        }
        Ok(snapshot)
    }

    /// The room's state and logs, as recorded.
    pub async fn room_model(&self, room_id: &str) -> Result<RoomModel, PusherError> {
        Ok(RoomModel {
            snapshot: self.room(room_id).await?,
            memberships: self.membership_log(room_id).await?,
            history: self.visibility_log(room_id).await?,
        })
    }

    /// Position of the room's latest recorded event (0: none yet).
    pub async fn last_pos(&self, room_id: &str) -> Result<i64, PusherError> {
        let pos: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT last_pos FROM pusher_rooms WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(pos.unwrap_or(0))
    }

    /// Whether the event was already recorded (a redelivery).
    pub async fn event_pos(&self, event_id: &str) -> Result<Option<(String, i64)>, PusherError> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_as("SELECT room_id, pos FROM pusher_room_events WHERE event_id = $1")
                .bind(event_id)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Each user's membership changes in the room, oldest first.
    pub async fn membership_log(&self, room_id: &str) -> Result<HashMap<String, Vec<Membership>>, PusherError> {
        let rows: Vec<(String, i64, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT user_id, pos, membership FROM pusher_membership_log WHERE room_id = $1 ORDER BY pos",
            )
            .bind(room_id)
            .fetch_all(pool)
            .await?
        });
        let mut log: HashMap<String, Vec<Membership>> = HashMap::new();
        for (user_id, pos, membership) in rows {
            log.entry(user_id).or_default().push(Membership { pos, membership });
        }
        Ok(log)
    }

    /// The room's history visibility changes, oldest first.
    pub async fn visibility_log(&self, room_id: &str) -> Result<Vec<HistoryChange>, PusherError> {
        let rows: Vec<(i64, String)> = with_db!(&self.db, pool => {
            sqlx::query_as("SELECT pos, visibility FROM pusher_visibility_log WHERE room_id = $1 ORDER BY pos")
                .bind(room_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(|(pos, name)| HistoryChange { pos, visibility: parse_visibility(&name) }).collect())
    }

    /// Record the event and all it caused; `false` if it was already recorded.
    pub async fn write_event(&self, w: &EventWrite<'_>) -> Result<bool, PusherError> {
        let event_text = w.event.to_string();
        let written = with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let inserted = sqlx::query(
                "INSERT INTO pusher_room_events (event_id, room_id, pos) VALUES ($1, $2, $3) \
                 ON CONFLICT (event_id) DO NOTHING",
            )
            .bind(w.event_id)
            .bind(w.room_id)
            .bind(w.pos)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Position 0 is backfilled history: it moves nothing.
            if inserted == 1 && w.pos > 0 {
                sqlx::query(
                    "INSERT INTO pusher_rooms (room_id, room_version, last_pos) VALUES ($1, $2, $3) \
                     ON CONFLICT (room_id) DO UPDATE SET last_pos = excluded.last_pos",
                )
                .bind(w.room_id)
                .bind(w.room_version)
                .bind(w.pos)
                .execute(&mut *tx)
                .await?;
                for (event_type, state_key) in &w.removed {
                    sqlx::query(
                        "DELETE FROM pusher_room_state WHERE room_id = $1 AND event_type = $2 AND state_key = $3",
                    )
                    .bind(w.room_id)
                    .bind(event_type)
                    .bind(state_key)
                    .execute(&mut *tx)
                    .await?;
                }
                for ((event_type, state_key), entry) in &w.added {
                    sqlx::query(
                        "INSERT INTO pusher_room_state (room_id, event_type, state_key, sender, content) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, event_type, state_key) \
                         DO UPDATE SET sender = excluded.sender, content = excluded.content",
                    )
                    .bind(w.room_id)
                    .bind(event_type)
                    .bind(state_key)
                    .bind(&entry.sender)
                    .bind(entry.content.to_string())
                    .execute(&mut *tx)
                    .await?;
                }
                for (user_id, membership) in &w.memberships {
                    sqlx::query(
                        "INSERT INTO pusher_membership_log (room_id, user_id, pos, membership) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (room_id, user_id, pos) DO NOTHING",
                    )
                    .bind(w.room_id)
                    .bind(user_id)
                    .bind(w.pos)
                    .bind(membership)
                    .execute(&mut *tx)
                    .await?;
                }
                if let Some(visibility) = w.visibility {
                    sqlx::query(
                        "INSERT INTO pusher_visibility_log (room_id, pos, visibility) VALUES ($1, $2, $3) \
                         ON CONFLICT (room_id, pos) DO NOTHING",
                    )
                    .bind(w.room_id)
                    .bind(w.pos)
                    .bind(visibility_name(visibility))
                    .execute(&mut *tx)
                    .await?;
                }
                for n in &w.notifications {
                    sqlx::query(
                        "INSERT INTO pusher_notifications (user_id, room_id, event_id, pos, thread_id, ts, highlight, \
                         actions, event) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                         ON CONFLICT (user_id, event_id) DO NOTHING",
                    )
                    .bind(&n.user_id)
                    .bind(w.room_id)
                    .bind(w.event_id)
                    .bind(w.pos)
                    .bind(&n.thread_id)
                    .bind(w.ts)
                    .bind(n.highlight)
                    .bind(n.actions.to_string())
                    .bind(&event_text)
                    .execute(&mut *tx)
                    .await?;
                }
                for d in &w.deliveries {
                    sqlx::query(
                        "INSERT INTO pusher_outbox (user_id, app_id, pushkey, url, body, created_ms, next_attempt_ms) \
                         VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    )
                    .bind(&d.user_id)
                    .bind(&d.app_id)
                    .bind(&d.pushkey)
                    .bind(&d.url)
                    .bind(d.body.to_string())
                    .bind(w.now_ms)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            inserted == 1
        });
        Ok(written)
    }
}
