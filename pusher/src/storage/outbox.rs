//! `pusher_outbox`: push gateway requests not yet acknowledged. A row is
//! written with the event that caused it and deleted after the gateway
//! answered 2xx (or gave up), so a crash anywhere in between sends it again
//! (at least once). Only the oldest row of each pusher is ever sent, which
//! keeps each pusher's notifications in order.

use myelin_storage::{WritePool, sqlx, with_db};

use super::Storage;
use crate::PusherError;

/// A request waiting for its pusher.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub user_id: String,
    pub app_id: String,
    pub pushkey: String,
    pub url: String,
    pub body: String,
    pub created_ms: i64,
    pub attempts: i64,
    pub next_attempt_ms: i64,
}

type Row = (i64, String, String, String, String, String, i64, i64, i64);

impl Storage {
    /// The oldest waiting request of each pusher, if it is due at `now_ms`;
    /// at most `limit` of them, oldest first.
    pub async fn due_deliveries(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxRow>, PusherError> {
        let rows: Vec<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT id, user_id, app_id, pushkey, url, body, created_ms, attempts, next_attempt_ms \
                 FROM pusher_outbox WHERE id IN (SELECT MIN(id) FROM pusher_outbox GROUP BY user_id, app_id, pushkey) \
                 AND next_attempt_ms <= $1 ORDER BY id LIMIT $2",
            )
            .bind(now_ms)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(id, user_id, app_id, pushkey, url, body, created_ms, attempts, next_attempt_ms)| OutboxRow {
                id,
                user_id,
                app_id,
                pushkey,
                url,
                body,
                created_ms,
                attempts,
                next_attempt_ms,
            })
            .collect())
    }

    /// Take the row for one attempt: move its next attempt to `lease_until`
    /// if nobody else did first, so that two pusher instances never send
    /// it at once. `false`: another instance has it.
    pub async fn claim_delivery(&self, row: &OutboxRow, lease_until: i64) -> Result<bool, PusherError> {
        let affected = with_db!(&self.db, pool => {
            sqlx::query("UPDATE pusher_outbox SET next_attempt_ms = $2 WHERE id = $1 AND next_attempt_ms = $3")
                .bind(row.id)
                .bind(lease_until)
                .bind(row.next_attempt_ms)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Whether the pusher still exists (it may have been deleted, replaced
    /// by another user's or revoked with its token since the row was written).
    pub async fn pusher_exists(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<bool, PusherError> {
        let found: i64 = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM pusher_pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3",
            )
            .bind(user_id)
            .bind(app_id)
            .bind(pushkey)
            .fetch_one(pool)
            .await?
        });
        Ok(found > 0)
    }

    pub async fn delete_delivery(&self, id: i64) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM pusher_outbox WHERE id = $1").bind(id).execute(pool).await?;
        });
        Ok(())
    }

    /// Count a failed attempt and set when to try again.
    pub async fn retry_delivery(&self, id: i64, next_attempt_ms: i64) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE pusher_outbox SET attempts = attempts + 1, next_attempt_ms = $2 WHERE id = $1")
                .bind(id)
                .bind(next_attempt_ms)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// A gateway rejected the pushkey: remove the pusher and what waits for it.
    pub async fn delete_rejected_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM pusher_pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM pusher_outbox WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }
}
