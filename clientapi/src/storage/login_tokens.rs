//! Login tokens (`m.login.token`): minted by a logged-in client through
//! `/login/get_token` for another device to log in with once. Stored as
//! hashes, like access tokens; spent by the login that uses them.

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// Store a new token, dropping the expired ones meanwhile.
pub async fn insert(db: &Db, token_hash: &str, user_id: &str, now_ms: i64, expires_ms: i64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("DELETE FROM clientapi_login_tokens WHERE expires_ms <= $1").bind(now_ms).execute(&mut *tx).await?;
        sqlx::query("INSERT INTO clientapi_login_tokens (token_hash, user_id, expires_ms) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(user_id)
            .bind(expires_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Spend a token: the user it logs in, if it exists and has not expired.
/// Deleting and reading in one statement lets only one login use it.
pub async fn take(db: &Db, token_hash: &str, now_ms: i64) -> Result<Option<String>, sqlx::Error> {
    let spent: Option<(String, i64)> = with_db!(db, pool => {
        sqlx::query_as("DELETE FROM clientapi_login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ms")
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
    });
    Ok(spent.filter(|(_, expires_ms)| *expires_ms > now_ms).map(|(user_id, _)| user_id))
}
