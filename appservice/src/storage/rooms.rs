//! `appservice_members` and `appservice_room_aliases`: what interest reads
//! of a room, kept from the state deltas of `roomserver.output`, written in
//! the transaction that queues the event that changed them.

use std::collections::BTreeSet;

use myelin_storage::{WritePool, sqlx, with_db};

use super::Storage;
use crate::AppServiceError;
use crate::interest::RoomChanges;

/// One event's effect: the room changes it made and the services whose
/// queues it joins.
pub struct EventWrite<'a> {
    pub room_id: &'a str,
    pub changes: &'a RoomChanges,
    pub event_id: &'a str,
    /// The event in client format, as the services receive it.
    pub event: &'a str,
    pub services: &'a [&'a str],
}

impl Storage {
    /// Local users joined to or invited into the room.
    pub async fn members(&self, room_id: &str) -> Result<BTreeSet<String>, AppServiceError> {
        let users: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT user_id FROM appservice_members WHERE room_id = $1")
                .bind(room_id)
                .fetch_all(pool)
                .await?
        });
        Ok(users.into_iter().collect())
    }

    /// The room's canonical and alternative aliases.
    pub async fn aliases(&self, room_id: &str) -> Result<Vec<String>, AppServiceError> {
        let text: Option<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT aliases FROM appservice_room_aliases WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(pool)
                .await?
        });
        let Some(text) = text else { return Ok(Vec::new()) };
        serde_json::from_str(&text).map_err(|e| AppServiceError::Corrupt(format!("aliases of {room_id}: {e}")))
    }

    /// Apply the room changes and queue the event for its services, at
    /// once. Queueing an event a service already has waiting changes
    /// nothing, so a redelivered record queues nothing twice.
    pub async fn write_event(&self, w: &EventWrite<'_>) -> Result<(), AppServiceError> {
        // `Some(None)`: the room has no aliases any more.
        let aliases =
            w.changes.aliases.as_ref().map(|list| {
                (!list.is_empty()).then(|| serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned()))
            });
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for (user_id, present) in &w.changes.members {
                let sql = if *present {
                    "INSERT INTO appservice_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
                } else {
                    "DELETE FROM appservice_members WHERE room_id = $1 AND user_id = $2"
                };
                sqlx::query(sql).bind(w.room_id).bind(user_id).execute(&mut *tx).await?;
            }
            match &aliases {
                None => {}
                Some(None) => {
                    sqlx::query("DELETE FROM appservice_room_aliases WHERE room_id = $1")
                        .bind(w.room_id)
                        .execute(&mut *tx)
                        .await?;
                }
                Some(Some(text)) => {
                    sqlx::query(
                        "INSERT INTO appservice_room_aliases (room_id, aliases) VALUES ($1, $2) \
                         ON CONFLICT (room_id) DO UPDATE SET aliases = excluded.aliases",
                    )
                    .bind(w.room_id)
                    .bind(text)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            for service_id in w.services {
                sqlx::query(
                    "INSERT INTO appservice_queue (service_id, event_id, event) VALUES ($1, $2, $3) \
                     ON CONFLICT (service_id, event_id) DO NOTHING",
                )
                .bind(*service_id)
                .bind(w.event_id)
                .bind(w.event)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
