//! `pusher_notifications`: every notification a user's rules asked for,
//! with whether a read receipt has covered it since; the counts derive from
//! it. `pusher_ignored_users`: who ignores whom (`m.ignored_user_list`).

use std::collections::{BTreeMap, HashMap};

use myelin_storage::sqlx::AssertSqlSafe;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::Value;

use super::{IN_LIST_CHUNK, Storage, placeholders};
use crate::PusherError;
use crate::api::ThreadCounts;

/// A notification as `/notifications` lists it.
#[derive(Debug)]
pub struct NotificationRow {
    pub id: i64,
    pub room_id: String,
    pub ts: i64,
    pub read: bool,
    pub actions: Value,
    pub event: Value,
}

/// Which notifications a read receipt covers.
#[derive(Debug, Clone, Copy)]
pub enum ReceiptScope<'a> {
    /// An unthreaded receipt: the whole room.
    Room,
    /// The main timeline (`thread_id: "main"`).
    Main,
    /// One thread, by its root event id.
    Thread(&'a str),
}

/// Unread counts of one room: the total and per thread (`""`: main timeline).
pub type Counts = BTreeMap<String, ThreadCounts>;

impl Storage {
    /// Replace the users `user_id` ignores.
    pub async fn set_ignored(&self, user_id: &str, ignored: &[String]) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM pusher_ignored_users WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            for other in ignored {
                sqlx::query(
                    "INSERT INTO pusher_ignored_users (user_id, ignored_user_id) VALUES ($1, $2) \
                     ON CONFLICT (user_id, ignored_user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(other)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The users who ignore `sender`.
    pub async fn ignoring(&self, sender: &str) -> Result<Vec<String>, PusherError> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT user_id FROM pusher_ignored_users WHERE ignored_user_id = $1")
                .bind(sender)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Each user's unread notifications in every room, for the badge a
    /// gateway shows; users without any are absent.
    pub async fn unread_totals(&self, users: &[&str]) -> Result<HashMap<String, u64>, PusherError> {
        let mut totals = HashMap::new();
        for chunk in users.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT user_id, COUNT(*) FROM pusher_notifications WHERE NOT read AND user_id IN ({}) GROUP BY user_id",
                placeholders(1, chunk.len())
            );
            let rows: Vec<(String, i64)> = with_db!(&self.db, pool => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()));
                for user in chunk {
                    query = query.bind(*user);
                }
                query.fetch_all(pool).await?
            });
            totals.extend(rows.into_iter().map(|(user, n)| (user, n.max(0) as u64)));
        }
        Ok(totals)
    }

    /// [`Storage::counts`] of several users in one room; users without
    /// unread notifications there get empty counts.
    pub async fn counts_in_room(&self, room_id: &str, users: &[&str]) -> Result<HashMap<String, Counts>, PusherError> {
        let mut all: HashMap<String, Counts> = users.iter().map(|u| ((*u).to_owned(), Counts::new())).collect();
        for chunk in users.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT user_id, thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END) \
                 FROM pusher_notifications WHERE room_id = $1 AND NOT read AND user_id IN ({}) \
                 GROUP BY user_id, thread_id",
                placeholders(2, chunk.len())
            );
            let rows: Vec<(String, String, i64, i64)> = with_db!(&self.db, pool => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str())).bind(room_id);
                for user in chunk {
                    query = query.bind(*user);
                }
                query.fetch_all(pool).await?
            });
            for (user, thread, n, h) in rows {
                let counts = ThreadCounts { notification_count: n.max(0) as u64, highlight_count: h.max(0) as u64 };
                all.entry(user).or_default().insert(thread, counts);
            }
        }
        Ok(all)
    }

    /// The users notified of an event (to publish their counts again when
    /// the event is redelivered).
    pub async fn notified_users(&self, event_id: &str) -> Result<Vec<String>, PusherError> {
        Ok(with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT user_id FROM pusher_notifications WHERE event_id = $1")
                .bind(event_id)
                .fetch_all(pool)
                .await?
        }))
    }

    /// Mark the user's notifications in the room up to position `pos` read.
    pub async fn mark_read(
        &self,
        user_id: &str,
        room_id: &str,
        pos: i64,
        scope: ReceiptScope<'_>,
    ) -> Result<(), PusherError> {
        let (all, thread) = match scope {
            ReceiptScope::Room => (true, ""),
            ReceiptScope::Main => (false, ""),
            ReceiptScope::Thread(root) => (false, root),
        };
        with_db!(&self.db, pool => {
            sqlx::query(
                "UPDATE pusher_notifications SET read = TRUE WHERE user_id = $1 AND room_id = $2 AND pos <= $3 \
                 AND NOT read AND ($4 OR thread_id = $5)",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(pos)
            .bind(all)
            .bind(thread)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Up to `limit` of the user's notifications before id `before`, newest first.
    pub async fn notifications(
        &self,
        user_id: &str,
        before: i64,
        limit: i64,
        only_highlight: bool,
    ) -> Result<Vec<NotificationRow>, PusherError> {
        let rows: Vec<(i64, String, i64, bool, String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, room_id, ts, read, actions, event FROM pusher_notifications \
                 WHERE user_id = $1 AND id < $2 AND (highlight OR NOT $3) ORDER BY id DESC LIMIT $4",
            )
            .bind(user_id)
            .bind(before)
            .bind(only_highlight)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, room_id, ts, read, actions, event)| {
                let corrupt = |e: serde_json::Error| PusherError::Corrupt(format!("notification {id}: {e}"));
                Ok(NotificationRow {
                    id,
                    room_id,
                    ts,
                    read,
                    actions: serde_json::from_str(&actions).map_err(corrupt)?,
                    event: serde_json::from_str(&event).map_err(corrupt)?,
                })
            })
            .collect()
    }
}
