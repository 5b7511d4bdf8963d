//! `federationapi_server_keys` and `federationapi_key_responses`.

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// One stored key of a remote server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub key_id: String,
    pub public_key: String,
    pub valid_until_ts: Option<u64>,
    pub expired_ts: Option<u64>,
    pub fetched_ts: u64,
}

/// A verified key response, ready to store.
#[derive(Debug, Clone)]
pub struct KeyResponse {
    pub server_name: String,
    /// The signed response as received (canonical JSON text).
    pub response: String,
    pub valid_until_ts: u64,
    /// `(key id, public key)` of `verify_keys`.
    pub current: Vec<(String, String)>,
    /// `(key id, public key, expired_ts)` of `old_verify_keys`.
    pub old: Vec<(String, String, u64)>,
}

/// `(key_id, public_key, valid_until_ts, expired_ts, fetched_ts)` as stored.
type KeyRow = (String, String, Option<i64>, Option<i64>, i64);

pub async fn keys(db: &Db, server_name: &str) -> Result<Vec<StoredKey>, sqlx::Error> {
    let rows: Vec<KeyRow> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT key_id, public_key, valid_until_ts, expired_ts, fetched_ts FROM federationapi_server_keys \
             WHERE server_name = $1 ORDER BY key_id",
        )
        .bind(server_name)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(key_id, public_key, valid_until_ts, expired_ts, fetched_ts)| StoredKey {
            key_id,
            public_key,
            valid_until_ts: valid_until_ts.map(|t| t as u64),
            expired_ts: expired_ts.map(|t| t as u64),
            fetched_ts: fetched_ts as u64,
        })
        .collect())
}

/// The stored response of `server_name`, if any: `(response, valid_until_ts)`.
pub async fn response(db: &Db, server_name: &str) -> Result<Option<(String, u64)>, sqlx::Error> {
    let row: Option<(String, i64)> = with_db!(db, pool => {
        sqlx::query_as("SELECT response, valid_until_ts FROM federationapi_key_responses WHERE server_name = $1")
            .bind(server_name)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(|(response, until)| (response, until as u64)))
}

/// Store a response and the keys it lists, in one transaction. A response
/// older than the stored one (a notary's stale copy) changes nothing.
pub async fn store(db: &Db, keys: &KeyResponse, now_ms: u64) -> Result<(), sqlx::Error> {
    let now = now_ms as i64;
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let stored: Option<i64> =
            sqlx::query_scalar("SELECT valid_until_ts FROM federationapi_key_responses WHERE server_name = $1")
                .bind(&keys.server_name)
                .fetch_optional(&mut *tx)
                .await?;
        if stored.is_some_and(|until| until > keys.valid_until_ts as i64) {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO federationapi_key_responses (server_name, response, valid_until_ts, fetched_ts) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (server_name) DO UPDATE SET response = excluded.response, \
             valid_until_ts = excluded.valid_until_ts, fetched_ts = excluded.fetched_ts",
        )
        .bind(&keys.server_name)
        .bind(&keys.response)
        .bind(keys.valid_until_ts as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (key_id, public_key) in &keys.current {
            sqlx::query(
                "INSERT INTO federationapi_server_keys \
                 (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts) \
                 VALUES ($1, $2, $3, $4, NULL, $5) ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 public_key = excluded.public_key, valid_until_ts = excluded.valid_until_ts, expired_ts = NULL, \
                 fetched_ts = excluded.fetched_ts",
            )
            .bind(&keys.server_name)
            .bind(key_id)
            .bind(public_key)
            .bind(keys.valid_until_ts as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        for (key_id, public_key, expired_ts) in &keys.old {
            sqlx::query(
                "INSERT INTO federationapi_server_keys \
                 (server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts) \
                 VALUES ($1, $2, $3, NULL, $4, $5) ON CONFLICT (server_name, key_id) DO UPDATE SET \
                 public_key = excluded.public_key, valid_until_ts = NULL, expired_ts = excluded.expired_ts, \
                 fetched_ts = excluded.fetched_ts",
            )
            .bind(&keys.server_name)
            .bind(key_id)
            .bind(public_key)
            .bind(*expired_ts as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    })
}
