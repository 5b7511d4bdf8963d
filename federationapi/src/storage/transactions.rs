//! `federationapi_transactions`: the stored answer of each received transaction.

use myelin_storage::{Db, sqlx, with_db};

pub async fn response(db: &Db, origin: &str, txn_id: &str) -> Result<Option<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT response FROM federationapi_transactions WHERE origin = $1 AND txn_id = $2")
            .bind(origin)
            .bind(txn_id)
            .fetch_optional(pool)
            .await
    })
}

/// Keep the first answer if the transaction was stored meanwhile.
pub async fn store(db: &Db, origin: &str, txn_id: &str, response: &str, now_ms: u64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO federationapi_transactions (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (origin, txn_id) DO NOTHING",
        )
        .bind(origin)
        .bind(txn_id)
        .bind(response)
        .bind(now_ms as i64)
        .execute(pool)
        .await
        .map(drop)
    })
}
