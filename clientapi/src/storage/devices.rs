//! `clientapi_devices` and the tokens that belong to them: a device is
//! created by a login and ended (with its tokens) by a logout.

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// The refresh token a login issues with its access token, which then
/// expires at `access_expires_ms`.
pub struct NewRefresh<'a> {
    pub token_hash: &'a str,
    pub access_expires_ms: i64,
}

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
    refresh: Option<&NewRefresh<'_>>,
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
        sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO clientapi_access_tokens (token_hash, user_id, device_id, created_ms, expires_ms) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(device_id)
        .bind(now_ms)
        .bind(refresh.map(|r| r.access_expires_ms))
        .execute(&mut *tx)
        .await?;
        if let Some(refresh) = refresh {
            sqlx::query(
                "INSERT INTO clientapi_refresh_tokens (token_hash, user_id, device_id, access_hash, created_ms) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(refresh.token_hash)
            .bind(user_id)
            .bind(device_id)
            .bind(token_hash)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
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
        sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .execute(&mut *tx)
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
        sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM clientapi_devices WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(revoked)
    })
}

/// Delete every device of the user but `keep` and their tokens (a password
/// change logging out the other sessions); returns the revoked token hashes.
pub async fn end_other_sessions(db: &Db, user_id: &str, keep: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let revoked: Vec<String> = sqlx::query_scalar(
            "DELETE FROM clientapi_access_tokens WHERE user_id = $1 AND device_id <> $2 RETURNING token_hash",
        )
        .bind(user_id)
        .bind(keep)
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM clientapi_refresh_tokens WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM clientapi_devices WHERE user_id = $1 AND device_id <> $2")
            .bind(user_id)
            .bind(keep)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(revoked)
    })
}

/// A device as `GET /devices` shows it.
#[derive(Debug, Clone)]
pub struct Device {
    pub device_id: String,
    pub display_name: Option<String>,
}

/// The user's devices, oldest first.
pub async fn list(db: &Db, user_id: &str) -> Result<Vec<Device>, sqlx::Error> {
    let rows: Vec<(String, Option<String>)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT device_id, display_name FROM clientapi_devices WHERE user_id = $1 ORDER BY created_ms, device_id",
        )
        .bind(user_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(device_id, display_name)| Device { device_id, display_name }).collect())
}

pub async fn get(db: &Db, user_id: &str, device_id: &str) -> Result<Option<Device>, sqlx::Error> {
    let row: Option<(String, Option<String>)> = with_db!(db, pool => {
        sqlx::query_as("SELECT device_id, display_name FROM clientapi_devices WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(row.map(|(device_id, display_name)| Device { device_id, display_name }))
}

/// Rename the device; `false` when the user has no such device.
pub async fn set_display_name(
    db: &Db,
    user_id: &str,
    device_id: &str,
    display_name: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query("UPDATE clientapi_devices SET display_name = $3 WHERE user_id = $1 AND device_id = $2")
            .bind(user_id)
            .bind(device_id)
            .bind(display_name)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(done == 1)
}
