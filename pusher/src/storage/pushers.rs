//! `pusher_pushers`: one row per (app id, pushkey, user), with the hash of
//! the access token that set it, so that revoking the token removes it.

use std::collections::HashMap;

use myelin_storage::sqlx::AssertSqlSafe;
use myelin_storage::{WritePool, sqlx, with_db};
use serde_json::Value;

use super::{IN_LIST_CHUNK, Storage, placeholders};
use crate::PusherError;

/// A pusher as `/pushers/set` stores it and `/pushers` lists it.
#[derive(Debug, Clone)]
pub struct PusherRow {
    pub app_id: String,
    pub pushkey: String,
    pub kind: String,
    pub app_display_name: String,
    pub device_display_name: String,
    pub profile_tag: Option<String>,
    pub lang: String,
    pub data: Value,
}

type Row = (String, String, String, String, String, Option<String>, String, String);
/// A [`Row`] with its user in front.
type UserRow = (String, String, String, String, String, String, Option<String>, String, String);

fn pusher_row(row: Row) -> Result<PusherRow, PusherError> {
    let (app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data) = row;
    let data =
        serde_json::from_str(&data).map_err(|e| PusherError::Corrupt(format!("pusher {app_id}/{pushkey}: {e}")))?;
    Ok(PusherRow { app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data })
}

impl Storage {
    pub async fn pushers(&self, user_id: &str) -> Result<Vec<PusherRow>, PusherError> {
        let rows: Vec<Row> = with_db!(&self.db, pool => {
            sqlx::query_as(
                "SELECT app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data \
                 FROM pusher_pushers WHERE user_id = $1 ORDER BY app_id, pushkey",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(pusher_row).collect()
    }

    /// [`Storage::pushers`] of several users; users without any are absent.
    pub async fn pushers_of(&self, users: &[&str]) -> Result<HashMap<String, Vec<PusherRow>>, PusherError> {
        let mut all: HashMap<String, Vec<PusherRow>> = HashMap::new();
        for chunk in users.chunks(IN_LIST_CHUNK) {
            let sql = format!(
                "SELECT user_id, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data \
                 FROM pusher_pushers WHERE user_id IN ({}) ORDER BY user_id, app_id, pushkey",
                placeholders(1, chunk.len())
            );
            let rows: Vec<UserRow> = with_db!(&self.db, pool => {
                let mut query = sqlx::query_as(AssertSqlSafe(sql.as_str()));
                for user in chunk {
                    query = query.bind(*user);
                }
                query.fetch_all(pool).await?
            });
            for (user, app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data) in rows {
                let row = (app_id, pushkey, kind, app_display_name, device_display_name, profile_tag, lang, data);
                all.entry(user).or_default().push(pusher_row(row)?);
            }
        }
        Ok(all)
    }

    /// Create or replace the user's pusher; unless `append`, also remove the
    /// same app id and pushkey of every other user (the device changed hands).
    pub async fn put_pusher(
        &self,
        user_id: &str,
        pusher: &PusherRow,
        token_hash: &str,
        append: bool,
    ) -> Result<(), PusherError> {
        let data = pusher.data.to_string();
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            if !append {
                sqlx::query("DELETE FROM pusher_pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3")
                    .bind(&pusher.app_id)
                    .bind(&pusher.pushkey)
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "INSERT INTO pusher_pushers (user_id, app_id, pushkey, kind, app_display_name, device_display_name, \
                 profile_tag, lang, data, token_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET kind = excluded.kind, \
                 app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name, \
                 profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data, \
                 token_hash = excluded.token_hash",
            )
            .bind(user_id)
            .bind(&pusher.app_id)
            .bind(&pusher.pushkey)
            .bind(&pusher.kind)
            .bind(&pusher.app_display_name)
            .bind(&pusher.device_display_name)
            .bind(&pusher.profile_tag)
            .bind(&pusher.lang)
            .bind(&data)
            .bind(token_hash)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn delete_pusher(&self, user_id: &str, app_id: &str, pushkey: &str) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM pusher_pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3")
                .bind(user_id)
                .bind(app_id)
                .bind(pushkey)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Remove the pushers these (now revoked) access tokens set.
    pub async fn delete_pushers_of_tokens(&self, token_hashes: &[String]) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            let mut tx = pool.begin_write().await?;
            for hash in token_hashes {
                sqlx::query("DELETE FROM pusher_pushers WHERE token_hash = $1")
                    .bind(hash)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }
}
