//! `federationapi_device_lists`: per local user, the `stream_id` of the
//! last `m.device_list_update` sent about them and the `clientapi.keychange`
//! record it came from, so a redelivered record sends nothing twice and
//! `/user/devices` names the same stream position.

use myelin_storage::{Db, sqlx, with_db};

/// The user's current device list position (0 before any update).
pub async fn stream_id(db: &Db, user_id: &str) -> Result<i64, sqlx::Error> {
    let stream_id: Option<i64> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT stream_id FROM federationapi_device_lists WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(stream_id.unwrap_or(0))
}

/// The next update of the user for the record at `offset`: its
/// `stream_id` and the previous one (`None` for the first), or `None` if
/// this record was handled already.
pub async fn next(db: &Db, user_id: &str, offset: i64) -> Result<Option<(i64, Option<i64>)>, sqlx::Error> {
    let row: Option<(i64, i64)> = with_db!(db, pool => {
        sqlx::query_as("SELECT stream_id, record_offset FROM federationapi_device_lists WHERE user_id = $1")
            .bind(user_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(match row {
        Some((_, handled)) if handled >= offset => None,
        Some((stream_id, _)) => Some((stream_id + 1, Some(stream_id))),
        None => Some((1, None)),
    })
}

/// Record that the update `stream_id` of the record at `offset` is queued.
pub async fn advance(db: &Db, user_id: &str, stream_id: i64, offset: i64) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO federationapi_device_lists (user_id, stream_id, record_offset) VALUES ($1, $2, $3) \
             ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id, \
             record_offset = excluded.record_offset",
        )
        .bind(user_id)
        .bind(stream_id)
        .bind(offset)
        .execute(pool)
        .await
        .map(drop)
    })
}

/// Other servers with a member joined to a room the user is joined to.
pub async fn servers_sharing_a_room(db: &Db, user_id: &str, ours: &str) -> Result<Vec<String>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar(
            "SELECT DISTINCT b.server_name FROM federationapi_joined_members a \
             JOIN federationapi_joined_members b ON b.room_id = a.room_id \
             WHERE a.user_id = $1 AND b.server_name <> $2 ORDER BY b.server_name",
        )
        .bind(user_id)
        .bind(ours)
        .fetch_all(pool)
        .await
    })
}

/// Whether the user is joined to any room this server knows of.
pub async fn in_any_room(db: &Db, user_id: &str) -> Result<bool, sqlx::Error> {
    let count: i64 = with_db!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM federationapi_joined_members WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(pool)
            .await?
    });
    Ok(count > 0)
}
