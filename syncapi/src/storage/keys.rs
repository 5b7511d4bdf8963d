//! End-to-end key state from `clientapi.keychange`: the key counts each
//! device sees in `/sync`, and the stream of device list changes behind
//! `device_lists.changed` and `/keys/changes` (`left` comes from the
//! membership log).

use myelin_clientapi::api::KeyChange;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::{Map, Value};

use super::Storage;
use crate::SyncApiError;

impl Storage {
    /// Store the device's key counts and, when its keys changed, a device
    /// list change: its position, to wake those who share a room with the user.
    pub async fn put_key_change(&self, change: &KeyChange) -> Result<Option<i64>, sqlx::Error> {
        let counts = serde_json::to_string(&change.one_time_key_counts).expect("counts serialize");
        let fallback = serde_json::to_string(&change.unused_fallback_key_types).expect("types serialize");
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if !change.device_id.is_empty() {
            sqlx::query(
                "INSERT INTO syncapi_key_counts (user_id, device_id, one_time_key_counts, unused_fallback_key_types) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (user_id, device_id) DO UPDATE SET \
                 one_time_key_counts = excluded.one_time_key_counts, \
                 unused_fallback_key_types = excluded.unused_fallback_key_types",
            )
            .bind(change.user_id.as_str())
            .bind(&change.device_id)
            .bind(&counts)
            .bind(&fallback)
            .execute(&mut *tx)
            .await?;
            }
            let pos: Option<i64> = if change.device_keys_changed {
                Some(
                    sqlx::query_scalar(
                        "INSERT INTO syncapi_device_list_changes (user_id) VALUES ($1) RETURNING stream_pos",
                    )
                    .bind(change.user_id.as_str())
                    .fetch_one(&mut *tx)
                    .await?,
                )
            } else {
                None
            };
            tx.commit().await?;
            Ok(pos)
        })
    }

    /// The device's unclaimed one-time key counts and unused fallback key
    /// algorithms (empty before its first upload).
    pub async fn key_counts(&self, user_id: &str, device_id: &str) -> Result<(Value, Value), SyncApiError> {
        let row: Option<(String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT one_time_key_counts, unused_fallback_key_types FROM syncapi_key_counts \
                 WHERE user_id = $1 AND device_id = $2",
            )
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(pool)
            .await?
        });
        let Some((counts, fallback)) = row else { return Ok((Value::Object(Map::new()), Value::Array(Vec::new()))) };
        let parse = |text: &str| {
            serde_json::from_str(text).map_err(|e| SyncApiError::Corrupt(format!("key counts of {user_id}: {e}")))
        };
        Ok((parse(&counts)?, parse(&fallback)?))
    }

    /// Users sharing a room with `viewer` (and `viewer`) whose device keys
    /// changed in `(after, upto]`.
    pub async fn device_lists_changed(&self, viewer: &str, after: i64, upto: i64) -> Result<Vec<String>, SyncApiError> {
        let users: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT c.user_id FROM syncapi_device_list_changes c \
                 WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND (c.user_id = $1 OR EXISTS (\
                   SELECT 1 FROM syncapi_memberships a JOIN syncapi_memberships b ON b.room_id = a.room_id \
                   WHERE a.user_id = $1 AND a.membership = 'join' AND b.user_id = c.user_id \
                   AND b.membership = 'join')) ORDER BY c.user_id",
            )
            .bind(viewer)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(users)
    }

    /// Users who shared a joined room with `viewer` at events position
    /// `after` and share none at `upto`, by the membership log; only rooms
    /// with events in between can have lost anyone, so only they are read.
    pub async fn device_lists_left(&self, viewer: &str, after: i64, upto: i64) -> Result<Vec<String>, SyncApiError> {
        if after >= upto {
            return Ok(Vec::new());
        }
        // Whether user `{u}` was joined to room `{r}` at position `{p}`.
        macro_rules! joined_at {
            ($u:literal, $r:literal, $p:literal) => {
                concat!(
                    "(SELECT membership FROM syncapi_membership_log x WHERE x.user_id = ",
                    $u,
                    " AND x.room_id = ",
                    $r,
                    " AND x.stream_pos <= ",
                    $p,
                    " ORDER BY x.stream_pos DESC LIMIT 1) = 'join'"
                )
            };
        }
        let users: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(concat!(
                "SELECT DISTINCT m.user_id FROM syncapi_memberships m \
                 WHERE m.room_id IN (SELECT room_id FROM syncapi_events WHERE stream_pos > $2 AND stream_pos <= $3) \
                 AND m.user_id <> $1 AND ",
                joined_at!("m.user_id", "m.room_id", "$2"),
                " AND ",
                joined_at!("$1", "m.room_id", "$2"),
                " AND NOT EXISTS (SELECT 1 FROM syncapi_membership_log c \
                 WHERE c.user_id = $1 AND c.stream_pos <= $3 AND c.membership = 'join' AND ",
                joined_at!("$1", "c.room_id", "$3"),
                " AND ",
                joined_at!("m.user_id", "c.room_id", "$3"),
                ") ORDER BY m.user_id",
            ))
            .bind(viewer)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(users)
    }

    /// Everyone who shares a joined room with `user_id`, and `user_id`.
    pub async fn users_sharing_a_room(&self, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
        let mut users: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT DISTINCT b.user_id FROM syncapi_memberships a JOIN syncapi_memberships b \
                 ON b.room_id = a.room_id WHERE a.user_id = $1 AND a.membership = 'join' AND b.membership = 'join'",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        if !users.iter().any(|u| u == user_id) {
            users.push(user_id.to_owned());
        }
        Ok(users)
    }

    pub async fn max_device_list_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_device_list_changes").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }
}
