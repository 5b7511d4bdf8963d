//! `clientapi_device_keys`, `clientapi_one_time_keys` and
//! `clientapi_fallback_keys`: what devices published for end-to-end
//! encryption, stored as the JSON the client signed.

use std::collections::BTreeMap;

use myelin_storage::{Db, WritePool, sqlx, with_db};
use serde_json::Value;

/// A one-time or fallback key: `algorithm:key_id` and its JSON.
pub struct NewKey<'a> {
    pub algorithm: &'a str,
    pub key_id: &'a str,
    pub json: &'a Value,
}

/// What an upload found: the id of a one-time key already stored with other content.
pub enum Stored {
    Done,
    ConflictingOneTimeKey(String),
}

fn decode(text: &str) -> Result<Value, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Store an upload in one transaction: the device keys (replacing them),
/// new one-time keys (an id stored before must carry the same content) and
/// fallback keys (replacing the algorithm's previous one, unused again).
pub async fn upload(
    db: &Db,
    user_id: &str,
    device_id: &str,
    device_keys: Option<&Value>,
    one_time_keys: &[NewKey<'_>],
    fallback_keys: &[NewKey<'_>],
) -> Result<Stored, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        if let Some(keys) = device_keys {
            sqlx::query(
                "INSERT INTO clientapi_device_keys (user_id, device_id, keys) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, device_id) DO UPDATE SET keys = excluded.keys",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(keys.to_string())
            .execute(&mut *tx)
            .await?;
        }
        for key in one_time_keys {
            let stored: Option<String> = sqlx::query_scalar(
                "SELECT key_json FROM clientapi_one_time_keys \
                 WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key.algorithm)
            .bind(key.key_id)
            .fetch_optional(&mut *tx)
            .await?;
            match stored {
                Some(text) if decode(&text)? == *key.json => continue,
                Some(_) => return Ok(Stored::ConflictingOneTimeKey(format!("{}:{}", key.algorithm, key.key_id))),
                None => {}
            }
            sqlx::query(
                "INSERT INTO clientapi_one_time_keys (user_id, device_id, algorithm, key_id, key_json) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key.algorithm)
            .bind(key.key_id)
            .bind(key.json.to_string())
            .execute(&mut *tx)
            .await?;
        }
        for key in fallback_keys {
            sqlx::query(
                "INSERT INTO clientapi_fallback_keys (user_id, device_id, algorithm, key_id, key_json, used) \
                 VALUES ($1, $2, $3, $4, $5, FALSE) ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET \
                 key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE",
            )
            .bind(user_id)
            .bind(device_id)
            .bind(key.algorithm)
            .bind(key.key_id)
            .bind(key.json.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Stored::Done)
    })
}

/// Unclaimed one-time keys of the device, per algorithm.
pub async fn one_time_key_counts(
    db: &Db,
    user_id: &str,
    device_id: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT algorithm, COUNT(*) FROM clientapi_one_time_keys WHERE user_id = $1 AND device_id = $2 \
             GROUP BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(|(algorithm, n)| (algorithm, u64::try_from(n).unwrap_or(0))).collect())
}

/// Algorithms of the device's fallback keys not yet claimed.
pub async fn unused_fallback_key_types(db: &Db, user_id: &str, device_id: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar(
            "SELECT algorithm FROM clientapi_fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used \
             ORDER BY algorithm",
        )
        .bind(user_id)
        .bind(device_id)
        .fetch_all(pool)
        .await
    })
}

/// The published device keys of the user's devices (all when `devices` is
/// empty), each with the device's display name.
pub async fn device_keys(
    db: &Db,
    user_id: &str,
    devices: &[String],
) -> Result<Vec<(String, Value, Option<String>)>, sqlx::Error> {
    let rows: Vec<(String, String, Option<String>)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT k.device_id, k.keys, d.display_name FROM clientapi_device_keys k \
             JOIN clientapi_devices d ON d.user_id = k.user_id AND d.device_id = k.device_id \
             WHERE k.user_id = $1 ORDER BY k.device_id",
        )
        .bind(user_id)
        .fetch_all(pool)
        .await?
    });
    rows.into_iter()
        .filter(|(device_id, _, _)| devices.is_empty() || devices.contains(device_id))
        .map(|(device_id, keys, name)| Ok((device_id, decode(&keys)?, name)))
        .collect()
}

/// Take one key of `algorithm` for the device: a one-time key (deleted), or
/// else its fallback key (marked used, and handed out again until replaced).
/// `(key id, key JSON)`, or `None` when the device has neither.
pub async fn claim(
    db: &Db,
    user_id: &str,
    device_id: &str,
    algorithm: &str,
) -> Result<Option<(String, Value)>, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let one_time: Option<(String, String)> = sqlx::query_as(
            "SELECT key_id, key_json FROM clientapi_one_time_keys \
             WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 ORDER BY key_id LIMIT 1",
        )
        .bind(user_id)
        .bind(device_id)
        .bind(algorithm)
        .fetch_optional(&mut *tx)
        .await?;
        let claimed = match one_time {
            Some((key_id, json)) => {
                sqlx::query(
                    "DELETE FROM clientapi_one_time_keys \
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .bind(&key_id)
                .execute(&mut *tx)
                .await?;
                Some((key_id, json))
            }
            None => {
                let fallback: Option<(String, String)> = sqlx::query_as(
                    "SELECT key_id, key_json FROM clientapi_fallback_keys \
                     WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                )
                .bind(user_id)
                .bind(device_id)
                .bind(algorithm)
                .fetch_optional(&mut *tx)
                .await?;
                if fallback.is_some() {
                    sqlx::query(
                        "UPDATE clientapi_fallback_keys SET used = TRUE \
                         WHERE user_id = $1 AND device_id = $2 AND algorithm = $3",
                    )
                    .bind(user_id)
                    .bind(device_id)
                    .bind(algorithm)
                    .execute(&mut *tx)
                    .await?;
                }
                fallback
            }
        };
        tx.commit().await?;
        claimed.map(|(key_id, json)| Ok((format!("{algorithm}:{key_id}"), decode(&json)?))).transpose()
    })
}

/// The user's cross-signing key of `key_type` (`master`, `self_signing`, `user_signing`).
pub async fn cross_signing_key(db: &Db, user_id: &str, key_type: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT key_json FROM clientapi_cross_signing_keys WHERE user_id = $1 AND key_type = $2")
            .bind(user_id)
            .bind(key_type)
            .fetch_optional(pool)
            .await?
    });
    text.map(|t| decode(&t)).transpose()
}

/// Replace the user's cross-signing keys given, in one transaction.
pub async fn put_cross_signing_keys(db: &Db, user_id: &str, keys: &[(&str, &Value)]) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        for (key_type, json) in keys {
            sqlx::query(
                "INSERT INTO clientapi_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json",
            )
            .bind(user_id)
            .bind(*key_type)
            .bind(json.to_string())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// One signature over a key: `(target user, target key, signer, signer key id, signature)`.
pub type Signature = (String, String, String, String, String);

pub async fn put_signatures(db: &Db, signatures: &[Signature]) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        for (target_user, target_key, signer, signer_key_id, signature) in signatures {
            sqlx::query(
                "INSERT INTO clientapi_key_signatures (target_user, target_key, signer_user, signer_key_id, signature) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user, target_key, signer_user, signer_key_id) \
                 DO UPDATE SET signature = excluded.signature",
            )
            .bind(target_user)
            .bind(target_key)
            .bind(signer)
            .bind(signer_key_id)
            .bind(signature)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    })
}

/// Uploaded signatures over `target_key` of `target_user`, merged into the
/// key's own `signatures` object.
pub async fn merge_signatures(
    db: &Db,
    target_user: &str,
    target_key: &str,
    key: &mut Value,
) -> Result<(), sqlx::Error> {
    let rows: Vec<(String, String, String)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT signer_user, signer_key_id, signature FROM clientapi_key_signatures \
             WHERE target_user = $1 AND target_key = $2",
        )
        .bind(target_user)
        .bind(target_key)
        .fetch_all(pool)
        .await?
    });
    for (signer, key_id, signature) in rows {
        key["signatures"][signer.as_str()][key_id.as_str()] = Value::String(signature);
    }
    Ok(())
}
