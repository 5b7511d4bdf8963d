//! The receipts read model, from `edu.receipt`: the latest receipt per
//! (room, user, receipt type, thread).

use myelin_clientapi::api::ReceiptUpdate;
use myelin_storage::{WritePool, sqlx, with_db};

use super::Storage;
use crate::SyncApiError;

/// The thread column's value for unthreaded receipts (part of the key, so not NULL).
const NO_THREAD: &str = "";

#[derive(Debug, Clone)]
pub struct ReceiptRow {
    pub room_id: String,
    pub user_id: String,
    pub receipt_type: String,
    pub thread_id: Option<String>,
    pub event_id: String,
    pub ts: i64,
}

impl Storage {
    /// Store the receipt at the next receipt position; `Ok(None)` when the
    /// user's receipt of that kind already points at that event.
    pub async fn put_receipt(&self, receipt: &ReceiptUpdate) -> Result<Option<i64>, sqlx::Error> {
        let thread_id = receipt.thread_id.as_deref().unwrap_or(NO_THREAD);
        let ts = i64::try_from(receipt.ts).unwrap_or(i64::MAX);
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT event_id FROM syncapi_receipts \
                 WHERE room_id = $1 AND user_id = $2 AND receipt_type = $3 AND thread_id = $4",
            )
            .bind(receipt.room_id.as_str())
            .bind(receipt.user_id.as_str())
            .bind(&receipt.receipt_type)
            .bind(thread_id)
            .fetch_optional(&mut *tx)
            .await?;
            if stored.as_deref() == Some(receipt.event_id.as_str()) {
                return Ok(None);
            }
            let pos: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM syncapi_receipts")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO syncapi_receipts (room_id, user_id, receipt_type, thread_id, event_id, ts, stream_pos) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (room_id, user_id, receipt_type, thread_id) \
                 DO UPDATE SET event_id = excluded.event_id, ts = excluded.ts, stream_pos = excluded.stream_pos",
            )
            .bind(receipt.room_id.as_str())
            .bind(receipt.user_id.as_str())
            .bind(&receipt.receipt_type)
            .bind(thread_id)
            .bind(receipt.event_id.as_str())
            .bind(ts)
            .bind(pos)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(pos))
        })
    }

    /// Receipts that changed in `(after, upto]` in the rooms `viewer` is
    /// joined to; private receipts only when they are the viewer's own.
    pub async fn receipts_between(&self, viewer: &str, after: i64, upto: i64) -> Result<Vec<ReceiptRow>, SyncApiError> {
        type Row = (String, String, String, String, String, i64);
        let rows: Vec<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT room_id, user_id, receipt_type, thread_id, event_id, ts FROM syncapi_receipts \
                 WHERE stream_pos > $2 AND stream_pos <= $3 \
                 AND (receipt_type <> 'm.read.private' OR user_id = $1) \
                 AND room_id IN (SELECT room_id FROM syncapi_memberships WHERE user_id = $1 AND membership = 'join') \
                 ORDER BY stream_pos",
            )
            .bind(viewer)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(room_id, user_id, receipt_type, thread_id, event_id, ts)| ReceiptRow {
                room_id,
                user_id,
                receipt_type,
                thread_id: Some(thread_id).filter(|t| t != NO_THREAD),
                event_id,
                ts,
            })
            .collect())
    }

    pub async fn max_receipt_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_receipts").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }

    /// Users joined to the room now, whom typing and receipts concern.
    pub async fn joined_users(&self, room_id: &str) -> Result<Vec<String>, sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT user_id FROM syncapi_memberships WHERE room_id = $1 AND membership = 'join'")
                .bind(room_id)
                .fetch_all(pool)
                .await
        })
    }
}
