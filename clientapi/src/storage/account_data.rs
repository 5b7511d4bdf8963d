//! `clientapi_account_data`: the latest content of each account data entry
//! of each user, global (`room_id = ''`) or per room.

use myelin_storage::{Db, sqlx, with_db};
use serde_json::Value;

/// Replace the entry's content.
pub async fn put(
    db: &Db,
    user_id: &str,
    room_id: Option<&str>,
    data_type: &str,
    content: &Value,
) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO clientapi_account_data (user_id, room_id, data_type, content) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (user_id, room_id, data_type) DO UPDATE SET content = excluded.content",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or_default())
        .bind(data_type)
        .bind(content.to_string())
        .execute(pool)
        .await?;
    });
    Ok(())
}

pub async fn get(db: &Db, user_id: &str, room_id: Option<&str>, data_type: &str) -> Result<Option<Value>, sqlx::Error> {
    let text: Option<String> = with_db!(db, pool => {
        sqlx::query_scalar(
            "SELECT content FROM clientapi_account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3",
        )
        .bind(user_id)
        .bind(room_id.unwrap_or_default())
        .bind(data_type)
        .fetch_optional(pool)
        .await?
    });
    text.map(|t| serde_json::from_str(&t).map_err(|e| sqlx::Error::Decode(Box::new(e)))).transpose()
}

/// Delete every entry of the user's, global and per room.
pub async fn delete_all(db: &Db, user_id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("DELETE FROM clientapi_account_data WHERE user_id = $1").bind(user_id).execute(pool).await?;
    });
    Ok(())
}
