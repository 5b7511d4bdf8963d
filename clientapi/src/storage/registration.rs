//! Short-lived registration state: shared-secret nonces (single use) and
//! user-interactive authentication sessions. Both live in the database so
//! that any client API instance can answer the follow-up request.

use myelin_storage::{Db, WritePool, sqlx, with_db};

pub async fn store_nonce(db: &Db, nonce: &str, now_ms: i64, expired_before_ms: i64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM clientapi_registration_nonces WHERE created_ms < $1")
            .bind(expired_before_ms)
            .execute(pool)
            .await?;
        sqlx::query("INSERT INTO clientapi_registration_nonces (nonce, created_ms) VALUES ($1, $2)")
            .bind(nonce)
            .bind(now_ms)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Remove the nonce and return when it was issued; `None` if unknown or
/// already used. Atomic, so a nonce serves exactly one request.
pub async fn take_nonce(db: &Db, nonce: &str) -> Result<Option<i64>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("DELETE FROM clientapi_registration_nonces WHERE nonce = $1 RETURNING created_ms")
            .bind(nonce)
            .fetch_optional(pool)
            .await
    })
}

pub async fn create_uia_session(
    db: &Db,
    session_id: &str,
    now_ms: i64,
    expired_before_ms: i64,
) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        // An expired session that passed a registration token no longer holds one of its uses.
        sqlx::query(
            "UPDATE clientapi_registration_tokens SET pending = pending - (SELECT COUNT(*) FROM \
             clientapi_uia_sessions s WHERE s.registration_token = clientapi_registration_tokens.token \
             AND s.created_ms < $1) WHERE token IN (SELECT registration_token FROM clientapi_uia_sessions \
             WHERE created_ms < $1 AND registration_token IS NOT NULL)",
        )
        .bind(expired_before_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM clientapi_uia_sessions WHERE created_ms < $1")
            .bind(expired_before_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO clientapi_uia_sessions (session_id, created_ms) VALUES ($1, $2)")
            .bind(session_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// When the session was created, if it exists.
pub async fn uia_session(db: &Db, session_id: &str) -> Result<Option<i64>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT created_ms FROM clientapi_uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(pool)
            .await
    })
}

pub async fn delete_uia_session(db: &Db, session_id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM clientapi_uia_sessions WHERE session_id = $1").bind(session_id).execute(pool).await?;
    });
    Ok(())
}
