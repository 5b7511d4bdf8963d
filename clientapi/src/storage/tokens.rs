//! `clientapi_access_tokens`: access tokens, stored only as their hash.

use myelin_storage::{Db, sqlx, with_db};

/// The `(user_id, device_id)` owning the token with this hash.
pub async fn lookup(db: &Db, token_hash: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_as("SELECT user_id, device_id FROM clientapi_access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(pool)
            .await
    })
}
