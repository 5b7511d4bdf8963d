//! `appservice_queue` and `appservice_txns`: each service's events in the
//! order they were queued. A batch is made by giving the oldest waiting
//! events a new transaction id, in one transaction; from then on that id
//! names exactly those events, which are sent again under it until the
//! service acknowledges them and they are deleted.

use myelin_storage::{WritePool, sqlx, with_db};

use super::Storage;
use crate::AppServiceError;

/// A transaction for one service: its id and its events (client format,
/// as stored), oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub txn_id: i64,
    pub events: Vec<String>,
}

impl Storage {
    /// The batch to send next: the one already made and not acknowledged,
    /// else a new one of the oldest `limit` waiting events, else `None`.
    pub async fn next_batch(&self, service_id: &str, limit: i64) -> Result<Option<Batch>, AppServiceError> {
        if let Some(batch) = self.unacknowledged(service_id).await? {
            return Ok(Some(batch));
        }
        let waiting: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT id FROM appservice_queue WHERE service_id = $1 AND txn_id IS NULL LIMIT 1")
                .bind(service_id)
                .fetch_optional(pool)
                .await?
        });
        if waiting.is_none() {
            return Ok(None);
        }
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let txn_id: i64 = sqlx::query_scalar(
                "INSERT INTO appservice_txns (service_id, last_txn_id) VALUES ($1, 1) \
                 ON CONFLICT (service_id) DO UPDATE SET last_txn_id = appservice_txns.last_txn_id + 1 \
                 RETURNING last_txn_id",
            )
            .bind(service_id)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE appservice_queue SET txn_id = $2 WHERE id IN (SELECT id FROM appservice_queue \
                 WHERE service_id = $1 AND txn_id IS NULL ORDER BY id LIMIT $3)",
            )
            .bind(service_id)
            .bind(txn_id)
            .bind(limit)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        self.unacknowledged(service_id).await
    }

    /// The batch made earlier and not acknowledged (there is at most one).
    async fn unacknowledged(&self, service_id: &str) -> Result<Option<Batch>, AppServiceError> {
        let rows: Vec<(i64, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT txn_id, event FROM appservice_queue WHERE service_id = $1 AND txn_id = \
                 (SELECT MIN(txn_id) FROM appservice_queue WHERE service_id = $1 AND txn_id IS NOT NULL) \
                 ORDER BY id",
            )
            .bind(service_id)
            .fetch_all(pool)
            .await?
        });
        let Some(&(txn_id, _)) = rows.first() else { return Ok(None) };
        Ok(Some(Batch { txn_id, events: rows.into_iter().map(|(_, event)| event).collect() }))
    }

    /// Drop what is queued for services other than `sending` (removed from
    /// the configuration, or left without a `url`): nothing would ever send
    /// it. Their last transaction ids are kept, so that a service added
    /// back never sees an id again. The number of events dropped.
    pub async fn forget_services_except(&self, sending: &[&str]) -> Result<u64, AppServiceError> {
        let queued: Vec<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT DISTINCT service_id FROM appservice_queue").fetch_all(pool).await?
        });
        let mut dropped = 0;
        for service_id in queued.iter().filter(|id| !sending.contains(&id.as_str())) {
            dropped += with_db!(&self.db, pool => {
                sqlx::query("DELETE FROM appservice_queue WHERE service_id = $1")
                    .bind(service_id)
                    .execute(pool)
                    .await?
                    .rows_affected()
            });
        }
        Ok(dropped)
    }

    /// The service acknowledged the batch: its events are delivered.
    pub async fn acknowledge(&self, service_id: &str, txn_id: i64) -> Result<(), AppServiceError> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM appservice_queue WHERE service_id = $1 AND txn_id = $2")
                .bind(service_id)
                .bind(txn_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
