//! `pusher_push_rules`: one row per user who has a stored ruleset. Writes
//! compare and swap on `version`, so two concurrent changes never lose one.

use myelin_storage::{sqlx, with_db};
use myelin_types::ruma::push::Ruleset;

use super::Storage;
use crate::PusherError;

/// A stored ruleset and the version it was stored at.
pub struct StoredRules {
    pub ruleset: Ruleset,
    pub version: i64,
}

impl Storage {
    pub async fn rules(&self, user_id: &str) -> Result<Option<StoredRules>, PusherError> {
        let row: Option<(String, i64)> = with_db!(&self.db, pool => {
            sqlx::query_as("SELECT ruleset, version FROM pusher_push_rules WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(text, version)| {
            let ruleset = serde_json::from_str(&text)
                .map_err(|e| PusherError::Corrupt(format!("push rules of {user_id}: {e}")))?;
            Ok(StoredRules { ruleset, version })
        })
        .transpose()
    }

    /// Store `ruleset` if the stored version is still `expected` (`None`:
    /// nothing stored yet); `false` when another change came first.
    pub async fn swap_rules(
        &self,
        user_id: &str,
        ruleset: &Ruleset,
        expected: Option<i64>,
    ) -> Result<bool, PusherError> {
        let text = serde_json::to_string(ruleset).map_err(|e| PusherError::Corrupt(e.to_string()))?;
        let affected = with_db!(&self.db, pool => {
            match expected {
                None => sqlx::query(
                    "INSERT INTO pusher_push_rules (user_id, ruleset, version) VALUES ($1, $2, 1) \
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(&text)
                .execute(pool)
                .await?
                .rows_affected(),
                Some(version) => sqlx::query(
                    "UPDATE pusher_push_rules SET ruleset = $2, version = version + 1 \
                     WHERE user_id = $1 AND version = $3",
                )
                .bind(user_id)
                .bind(&text)
                .bind(version)
                .execute(pool)
                .await?
                .rows_affected(),
            }
        });
        Ok(affected == 1)
    }

    /// Whether the user's ruleset was ever published as account data.
    pub async fn rules_published(&self, user_id: &str) -> Result<bool, PusherError> {
        let published: Option<bool> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT published FROM pusher_push_rules WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(published.unwrap_or(false))
    }

    pub async fn mark_rules_published(&self, user_id: &str) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            sqlx::query("UPDATE pusher_push_rules SET published = TRUE WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
