//! To-device inboxes, from `edu.todevice`: messages wait per device until
//! a sync acknowledges them.

use myelin_clientapi::api::ToDeviceMessage;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::{Value, json};

use super::Storage;
use crate::SyncApiError;

impl Storage {
    /// Queue the message for its device; `Ok(None)` when it was queued
    /// before (a redelivery).
    pub async fn put_to_device(&self, message: &ToDeviceMessage) -> Result<Option<i64>, sqlx::Error> {
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let pos: Option<i64> = sqlx::query_scalar(
                "INSERT INTO syncapi_to_device (message_id, user_id, device_id, sender, event_type, content) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (message_id) DO NOTHING RETURNING stream_pos",
            )
            .bind(&message.message_id)
            .bind(message.user_id.as_str())
            .bind(&message.device_id)
            .bind(message.sender.as_str())
            .bind(&message.event_type)
            .bind(message.content.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(pos)
        })
    }

    /// Up to `limit` messages for the device in `(after, upto]`, oldest
    /// first, as to-device events with their positions; messages up to
    /// `after` are acknowledged and deleted first.
    pub async fn take_to_device(
        &self,
        user_id: &str,
        device_id: &str,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Value)>, SyncApiError> {
        if after > 0 {
            let _guard = self.write_lock.lock().await;
            with_db!(&self.db, pool => {
                sqlx::query("DELETE FROM syncapi_to_device WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3")
                    .bind(user_id)
                    .bind(device_id)
                    .bind(after)
                    .execute(pool)
                    .await?;
            });
        }
        let rows: Vec<(i64, String, String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT stream_pos, sender, event_type, content FROM syncapi_to_device \
                 WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4 \
                 ORDER BY stream_pos LIMIT $5",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(after)
            .bind(upto)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(pos, sender, event_type, content)| {
                let content: Value = serde_json::from_str(&content)
                    .map_err(|e| SyncApiError::Corrupt(format!("to-device message at {pos}: {e}")))?;
                Ok((pos, json!({ "sender": sender, "type": event_type, "content": content })))
            })
            .collect()
    }

    pub async fn max_to_device_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_to_device").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }
}
