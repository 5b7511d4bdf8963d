//! `clientapi_devices` and the tokens that belong to them: a device is
//! created by a login and ended (with its tokens) by a logout.

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// Ensure the device exists, revoke the tokens it had, and give it
/// `token_hash`. Returns the hashes revoked (a login that names an
/// existing device replaces its access token, as the spec says).
pub async fn start_session(
    db: &Db,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
    token_hash: &str,
    now_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let revoked: Vec<String> = sqlx::query_scalar(
            "DELETE FROM clientapi_access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token_hash",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO clientapi_devices (user_id, device_id, display_name, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, device_id) DO NOTHING",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(display_name)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO clientapi_access_tokens (token_hash, user_id, device_id, created_ms) VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revoked)
    })
}

/// Delete one device and its tokens; returns the revoked token hashes.
pub async fn end_session(db: &Db, user_id: &str, device_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let revoked: Vec<String> = sqlx::query_scalar(
            "DELETE FROM clientapi_access_tokens WHERE user_id = $1 AND device_id = $2 RETURNING token_hash",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM clientapi_devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    })
}

/// Delete every device of the user and all their tokens.
pub async fn end_all_sessions(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let revoked: Vec<String> =
            sqlx::query_scalar("DELETE FROM clientapi_access_tokens WHERE user_id = $1 RETURNING token_hash")
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?;
        sqlx::query("DELETE FROM clientapi_devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(revoked)
    })
}
