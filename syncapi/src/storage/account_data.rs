//! The account data read model, from `clientapi.accountdata`.

use std::collections::BTreeSet;

use myelin_clientapi::api::AccountDataUpdate;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::Value;

use super::Storage;
use crate::SyncApiError;

/// One account data entry; `room_id` is empty for global account data.
#[derive(Debug, Clone)]
pub struct AccountDataRow {
    pub room_id: String,
    pub data_type: String,
    pub content: Value,
}

/// The users an `m.ignored_user_list` content names
/// (`{"ignored_users": {"@user:server": {}}}`).
pub fn ignored_users_in(content: &Value) -> BTreeSet<String> {
    let users = content.get("ignored_users").and_then(Value::as_object);
    users.map(|users| users.keys().cloned().collect()).unwrap_or_default()
}

impl Storage {
    /// Store the entry's new content at the next account data position;
    /// `Ok(None)` when it already had that content (a redelivery).
    pub async fn put_account_data(&self, update: &AccountDataUpdate) -> Result<Option<i64>, sqlx::Error> {
        let user_id = update.user_id.as_str();
        let room_id = update.room_id.as_ref().map(|r| r.as_str()).unwrap_or_default();
        let _guard = self.write_lock.lock().await;
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT content FROM syncapi_account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(&update.data_type)
            .fetch_optional(&mut *tx)
            .await?;
            if stored.and_then(|s| serde_json::from_str::<Value>(&s).ok()).as_ref() == Some(&update.content) {
                return Ok(None);
            }
            let pos: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(stream_pos), 0) + 1 FROM syncapi_account_data")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO syncapi_account_data (user_id, room_id, data_type, content, stream_pos) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, data_type) \
                 DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos",
            )
            .bind(user_id)
            .bind(room_id)
            .bind(&update.data_type)
            .bind(update.content.to_string())
            .bind(pos)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(pos))
        })
    }

    /// The user's entries that last changed in `(after, upto]`.
    pub async fn account_data_between(
        &self,
        user_id: &str,
        after: i64,
        upto: i64,
    ) -> Result<Vec<AccountDataRow>, SyncApiError> {
        let rows: Vec<(String, String, String)> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT room_id, data_type, content FROM syncapi_account_data \
                 WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos",
            )
            .bind(user_id)
            .bind(after)
            .bind(upto)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(room_id, data_type, content)| {
                let content = serde_json::from_str(&content)
                    .map_err(|e| SyncApiError::Corrupt(format!("account data {data_type}: {e}")))?;
                Ok(AccountDataRow { room_id, data_type, content })
            })
            .collect()
    }

    /// The users `user_id` ignores (`m.ignored_user_list`); a malformed
    /// list ignores nobody.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#ignoring-users>
    pub async fn ignored_users(&self, user_id: &str) -> Result<BTreeSet<String>, SyncApiError> {
        let content: Option<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar(
                "SELECT content FROM syncapi_account_data \
                 WHERE user_id = $1 AND room_id = '' AND data_type = 'm.ignored_user_list'",
            )
            .bind(user_id)
            .fetch_optional(pool)
            .await?
        });
        let content: Value = content.and_then(|text| serde_json::from_str(&text).ok()).unwrap_or(Value::Null);
        Ok(ignored_users_in(&content))
    }

    pub async fn max_account_data_pos(&self) -> Result<i64, SyncApiError> {
        let max: Option<i64> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT MAX(stream_pos) FROM syncapi_account_data").fetch_one(pool).await?
        });
        Ok(max.unwrap_or(0))
    }
}
