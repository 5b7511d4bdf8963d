//! Notification counts, from `pusher.counts`: the latest whole value per
//! (user, room), as `/sync` serves it in `unread_notifications`.

use myelin_pusher::api::RoomCounts;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::{Value, json};

use super::Storage;

impl Storage {
    /// Store each user's latest counts; later entries of the same user and
    /// room win, as they are newer.
    pub async fn put_counts(&self, all: &[RoomCounts]) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for counts in all {
                let threads = serde_json::to_string(&counts.threads).unwrap_or_else(|_| "{}".to_owned());
                sqlx::query(
                    "INSERT INTO syncapi_notification_counts (user_id, room_id, notification_count, highlight_count, \
                     threads) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id) DO UPDATE SET \
                     notification_count = excluded.notification_count, highlight_count = excluded.highlight_count, \
                     threads = excluded.threads",
                )
                .bind(counts.user_id.as_str())
                .bind(counts.room_id.as_str())
                .bind(i64::try_from(counts.notification_count).unwrap_or(i64::MAX))
                .bind(i64::try_from(counts.highlight_count).unwrap_or(i64::MAX))
                .bind(threads)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// `unread_notifications` and `unread_thread_notifications` of a joined room.
    pub async fn counts(&self, user_id: &str, room_id: &str) -> Result<(Value, Value), sqlx::Error> {
        let row: Option<(i64, i64, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT notification_count, highlight_count, threads FROM syncapi_notification_counts \
                 WHERE user_id = $1 AND room_id = $2",
            )
            .bind(user_id)
            .bind(room_id)
            .fetch_optional(pool)
            .await?
        });
        let (n, h, threads) = row.unwrap_or((0, 0, "{}".to_owned()));
        let threads = serde_json::from_str(&threads).unwrap_or_else(|_| json!({}));
        Ok((json!({ "notification_count": n, "highlight_count": h }), threads))
    }
}
