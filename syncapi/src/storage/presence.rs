//! Presence of this server's users, set with `PUT /presence` or by syncing
//! (`set_presence`): the latest per user and where it last changed in the
//! presence stream.

use myelin_storage::{WritePool, sqlx, with_db};

use super::Storage;
use crate::SyncApiError;

/// A user's presence as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    pub user_id: String,
    pub presence: String,
    pub status_msg: Option<String>,
    pub last_active_ts: i64,
}

type Row = (String, String, Option<String>, i64);

fn to_presence((user_id, presence, status_msg, last_active_ts): Row) -> Presence {
    Presence { user_id, presence, status_msg, last_active_ts }
}

impl Storage {
    /// Store a user's presence at the next presence position; `Ok(None)`
    /// when nothing others would see changed (`keep_status` leaves the
    /// status message as it was, as a sync's `set_presence` does).
    pub async fn put_presence(
        &self,
        user_id: &str,
        presence: &str,
        status_msg: Option<&str>,
        keep_status: bool,
        now_ms: i64,
    ) -> Result<Option<i64>, sqlx::Error> {
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let stored: Option<(String, Option<String>)> =
                sqlx::query_as("SELECT presence, status_msg FROM syncapi_presence WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            let status_msg = match (&stored, keep_status) {
                (Some((_, stored_status)), true) => stored_status.clone(),
                _ => status_msg.map(str::to_owned),
            };
            if stored.as_ref().is_some_and(|(p, s)| p == presence && *s == status_msg) {
                sqlx::query("UPDATE syncapi_presence SET last_active_ts = $2 WHERE user_id = $1")
                    .bind(user_id)
                    .bind(now_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(None);
            }
            let pos: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM syncapi_presence")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO syncapi_presence (user_id, presence, status_msg, last_active_ts, stream_pos) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, \
                 status_msg = excluded.status_msg, last_active_ts = excluded.last_active_ts, \
                 stream_pos = excluded.stream_pos",
            )
            .bind(user_id)
            .bind(presence)
            .bind(status_msg.as_deref())
            .bind(now_ms)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(pos))
        })
    }

    pub async fn presence(&self, user_id: &str) -> Result<Option<Presence>, SyncApiError> {
        let row: Option<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT user_id, presence, status_msg, last_active_ts FROM syncapi_presence WHERE user_id = $1",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(to_presence))
    }

    /// Presence that changed in `(after, upto]` of users who share a joined
    /// room with `viewer`, and the viewer's own.
    pub async fn presence_between(&self, viewer: &str, after: i64, upto: i64) -> Result<Vec<Presence>, SyncApiError> {
        let rows: Vec<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT c.user_id, c.presence, c.status_msg, c.last_active_ts FROM syncapi_presence c \
                 WHERE c.stream_pos > $2 AND c.stream_pos <= $3 AND (c.user_id = $1 OR EXISTS (\
                   SELECT 1 FROM syncapi_memberships a JOIN syncapi_memberships b ON b.room_id = a.room_id \
                   WHERE a.user_id = $1 AND a.membership = 'join' AND b.user_id = c.user_id \
                   AND b.membership = 'join')) ORDER BY c.stream_pos",
            )
            .bind(viewer)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(rows.into_iter().map(to_presence).collect())
    }

    pub async fn max_presence_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_presence").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }

    /// Whether `a` and `b` are joined to a room together.
    pub async fn share_a_room(&self, a: &str, b: &str) -> Result<bool, SyncApiError> {
        let shared: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM syncapi_memberships x JOIN syncapi_memberships y ON y.room_id = x.room_id \
                 WHERE x.user_id = $1 AND x.membership = 'join' AND y.user_id = $2 AND y.membership = 'join'",
            )
            .bind(a)
            .bind(b)
            .fetch_one(pool)
            .await?
        });
        Ok(shared > 0)
    }
}
