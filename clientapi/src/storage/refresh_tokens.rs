//! Refresh tokens (stored as hashes). Refreshing issues a new access token
//! and refresh token; the refresh token used stays valid until the new
//! access token or refresh token is used, so a client that lost the answer
//! can retry.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#refreshing-access-tokens>

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// The new pair `/refresh` stores.
pub struct Refreshed<'a> {
    pub access_hash: &'a str,
    pub refresh_hash: &'a str,
    pub now_ms: i64,
    pub access_expires_ms: i64,
}

/// Whose refresh token was used, and the access tokens that stop working.
pub struct Refreshing {
    pub user_id: String,
    pub revoked: Vec<String>,
}

/// Replace `old_hash` by a new pair: the access token issued with it (and
/// any pair issued from it before) stops working, its predecessor is
/// retired. `None` for an unknown (or retired) refresh token.
pub async fn refresh(db: &Db, old_hash: &str, new: &Refreshed<'_>) -> Result<Option<Refreshing>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let row: Option<(String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT user_id, device_id, access_hash, prev_hash FROM clientapi_refresh_tokens WHERE token_hash = $1",
        )
        .bind(old_hash)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((user_id, device_id, access_hash, prev_hash)) = row else {
            return Ok(None);
        };
        if let Some(prev_hash) = prev_hash {
            sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE token_hash = $1")
                .bind(prev_hash)
                .execute(&mut *tx)
                .await?;
        }
        // Pairs issued from this refresh token before (a retried refresh) are replaced too.
        let mut stale: Vec<String> =
            sqlx::query_scalar("DELETE FROM clientapi_refresh_tokens WHERE prev_hash = $1 RETURNING access_hash")
                .bind(old_hash)
                .fetch_all(&mut *tx)
                .await?;
        stale.push(access_hash);
        let mut revoked = Vec::new();
        for hash in stale {
            let gone: Option<String> =
                sqlx::query_scalar("DELETE FROM clientapi_access_tokens WHERE token_hash = $1 RETURNING token_hash")
                    .bind(hash)
                    .fetch_optional(&mut *tx)
                    .await?;
            revoked.extend(gone);
        }
        sqlx::query(
            "INSERT INTO clientapi_access_tokens (token_hash, user_id, device_id, created_ms, expires_ms, \
             retires_refresh_hash) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.access_hash)
        .bind(&user_id)
        .bind(&device_id)
        .bind(new.now_ms)
        .bind(new.access_expires_ms)
        .bind(old_hash)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO clientapi_refresh_tokens (token_hash, user_id, device_id, access_hash, prev_hash, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.refresh_hash)
        .bind(&user_id)
        .bind(&device_id)
        .bind(new.access_hash)
        .bind(old_hash)
        .bind(new.now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(Refreshing { user_id, revoked }))
    })
}

/// The access token `access_hash`, issued by a refresh, was used: the
/// refresh token that was refreshed (`retired_hash`) stops working.
pub async fn retire(db: &Db, access_hash: &str, retired_hash: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE token_hash = $1")
            .bind(retired_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE clientapi_access_tokens SET retires_refresh_hash = NULL WHERE token_hash = $1")
            .bind(access_hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE clientapi_refresh_tokens SET prev_hash = NULL WHERE prev_hash = $1")
            .bind(retired_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}
