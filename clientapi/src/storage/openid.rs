//! OpenID tokens: proof of a user's identity that third parties check with
//! the federation API's `/openid/userinfo`. Stored as hashes, like access
//! tokens, and useless once expired.

use myelin_storage::{Db, sqlx, with_db};

/// Store a new token, dropping the expired ones meanwhile.
pub async fn insert(db: &Db, token_hash: &str, user_id: &str, now_ms: i64, expires_ms: i64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM clientapi_openid_tokens WHERE expires_ms <= $1").bind(now_ms).execute(pool).await?;
        sqlx::query("INSERT INTO clientapi_openid_tokens (token_hash, user_id, expires_ms) VALUES ($1, $2, $3)")
            .bind(token_hash)
            .bind(user_id)
            .bind(expires_ms)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// The user behind an unexpired token.
pub async fn user_of(db: &Db, token_hash: &str, now_ms: i64) -> Result<Option<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT user_id FROM clientapi_openid_tokens WHERE token_hash = $1 AND expires_ms > $2")
            .bind(token_hash)
            .bind(now_ms)
            .fetch_optional(pool)
            .await
    })
}
