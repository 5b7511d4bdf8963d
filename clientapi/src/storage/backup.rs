//! `clientapi_backup_versions` and `clientapi_backup_keys`: server-side
//! backups of room keys, opaque to the server except for the fields that
//! decide which copy of a session key to keep.

use myelin_storage::{Db, WritePool, sqlx, with_db};
use serde_json::Value;

/// One backup version of a user.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: i64,
    pub algorithm: String,
    pub auth_data: Value,
    pub etag: i64,
}

/// Which of the room keys a read or delete concerns.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    All,
    Room(&'a str),
    Session(&'a str, &'a str),
}

impl Scope<'_> {
    fn room(&self) -> &str {
        match self {
            Scope::All => "",
            Scope::Room(room) | Scope::Session(room, _) => room,
        }
    }

    fn session(&self) -> &str {
        match self {
            Scope::Session(_, session) => session,
            _ => "",
        }
    }
}

fn decode(text: &str) -> Result<Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A new version, numbered after every earlier one (deleted ones too).
pub async fn create_version(db: &Db, user_id: &str, algorithm: &str, auth_data: &Value) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let version: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(version), 0) + 1 FROM clientapi_backup_versions WHERE user_id = $1",
        )
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO clientapi_backup_versions (user_id, version, algorithm, auth_data, etag, deleted) \
             VALUES ($1, $2, $3, $4, 0, FALSE)",
        )
        .bind(user_id)
        .bind(version)
        .bind(algorithm)
        .bind(auth_data.to_string())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(version)
    })
}

/// A live version, or the newest live one when `version` is `None`.
pub async fn version(db: &Db, user_id: &str, version: Option<i64>) -> Result<Option<Version>, sqlx::Error> {
    let row: Option<(i64, String, String, i64)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT version, algorithm, auth_data, etag FROM clientapi_backup_versions \
             WHERE user_id = $1 AND NOT deleted AND ($2 < 0 OR version = $2) ORDER BY version DESC LIMIT 1",
        )
        .bind(user_id)
        .bind(version.unwrap_or(-1))
        .fetch_optional(pool)
        .await?
    });
    row.map(|(version, algorithm, auth_data, etag)| {
        Ok(Version { version, algorithm, auth_data: decode(&auth_data)?, etag })
    })
    .transpose()
}

/// Replace a live version's `auth_data`; `false` if there is no such version.
pub async fn update_version(db: &Db, user_id: &str, version: i64, auth_data: &Value) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query(
            "UPDATE clientapi_backup_versions SET auth_data = $3 WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id)
        .bind(version)
        .bind(auth_data.to_string())
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// Delete a version and its keys; `false` if there is no such live version.
pub async fn delete_version(db: &Db, user_id: &str, version: i64) -> Result<bool, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let done = sqlx::query(
            "UPDATE clientapi_backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND NOT deleted",
        )
        .bind(user_id)
        .bind(version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM clientapi_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done == 1)
    })
}

/// Whether `new` should replace `old`: verified beats unverified, then the
/// lower first message index, then the fewer forwards.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#backup-algorithm-mmegolm_backupv1curve25519-aes-sha2>
pub fn is_better(new: &Value, old: &Value) -> bool {
    let verified = |k: &Value| k["is_verified"].as_bool().unwrap_or(false);
    let index = |k: &Value| k["first_message_index"].as_u64().unwrap_or(u64::MAX);
    let forwards = |k: &Value| k["forwarded_count"].as_u64().unwrap_or(u64::MAX);
    (!verified(new), index(new), forwards(new)) < (!verified(old), index(old), forwards(old))
}

/// Store session keys `(room, session, key data)` in a version, keeping the
/// better copy of each; bumps the version's etag when anything changed.
/// The number of keys in the version after.
pub async fn put_keys(
    db: &Db,
    user_id: &str,
    version: i64,
    keys: &[(String, String, Value)],
) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let mut changed = false;
        for (room_id, session_id, key_data) in keys {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT key_data FROM clientapi_backup_keys \
                 WHERE user_id = $1 AND version = $2 AND room_id = $3 AND session_id = $4",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(stored) = stored
                && !is_better(key_data, &decode(&stored)?)
            {
                continue;
            }
            sqlx::query(
                "INSERT INTO clientapi_backup_keys (user_id, version, room_id, session_id, key_data) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, version, room_id, session_id) \
                 DO UPDATE SET key_data = excluded.key_data",
            )
            .bind(user_id)
            .bind(version)
            .bind(room_id)
            .bind(session_id)
            .bind(key_data.to_string())
            .execute(&mut *tx)
            .await?;
            changed = true;
        }
        if changed {
            sqlx::query("UPDATE clientapi_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .execute(&mut *tx)
                .await?;
        }
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM clientapi_backup_keys WHERE user_id = $1 AND version = $2")
                .bind(user_id)
                .bind(version)
                .fetch_one(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(count)
    })
}

/// The keys of a version in `scope`, as `(room, session, key data)`.
pub async fn keys(
    db: &Db,
    user_id: &str,
    version: i64,
    scope: Scope<'_>,
) -> Result<Vec<(String, String, Value)>, sqlx::Error> {
    let rows: Vec<(String, String, String)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT room_id, session_id, key_data FROM clientapi_backup_keys \
             WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4) \
             ORDER BY room_id, session_id",
        )
        .bind(user_id)
        .bind(version)
        .bind(scope.room())
        .bind(scope.session())
        .fetch_all(pool)
        .await?
    });
    rows.into_iter().map(|(room, session, data)| Ok((room, session, decode(&data)?))).collect()
}

/// Delete the keys of a version in `scope`; bumps the etag.
pub async fn delete_keys(db: &Db, user_id: &str, version: i64, scope: Scope<'_>) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query(
            "DELETE FROM clientapi_backup_keys \
             WHERE user_id = $1 AND version = $2 AND ($3 = '' OR room_id = $3) AND ($4 = '' OR session_id = $4)",
        )
        .bind(user_id)
        .bind(version)
        .bind(scope.room())
        .bind(scope.session())
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE clientapi_backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    })
}

/// How many keys a version holds.
pub async fn count(db: &Db, user_id: &str, version: i64) -> Result<i64, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM clientapi_backup_keys WHERE user_id = $1 AND version = $2")
            .bind(user_id)
            .bind(version)
            .fetch_one(pool)
            .await
    })
}
