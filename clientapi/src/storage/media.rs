//! `clientapi_media`: what is known about each uploaded file,
//! `clientapi_pending_media`: `mxc://` URIs created before their content,
//! and `clientapi_remote_media`: other servers' files fetched for local
//! clients; the bytes live in the media store (`media.rs`).

use myelin_storage::{Db, WritePool, sqlx, with_db};

/// One uploaded file.
#[derive(Debug, Clone)]
pub struct Media {
    pub media_id: String,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    pub uploader: String,
    pub created_ms: i64,
}

/// The query that stores an uploaded file's row, on either backend.
macro_rules! insert_media {
    ($media:expr) => {
        sqlx::query(
            "INSERT INTO clientapi_media (media_id, content_type, filename, size, uploader, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&$media.media_id)
        .bind(&$media.content_type)
        .bind($media.filename.as_deref())
        .bind($media.size)
        .bind(&$media.uploader)
        .bind($media.created_ms)
    };
}

pub async fn insert(db: &Db, media: &Media) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        insert_media!(media).execute(pool).await?;
    });
    Ok(())
}

pub async fn get(db: &Db, media_id: &str) -> Result<Option<Media>, sqlx::Error> {
    let row: Option<(String, Option<String>, i64, String, i64)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT content_type, filename, size, uploader, created_ms FROM clientapi_media WHERE media_id = $1",
        )
        .bind(media_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|(content_type, filename, size, uploader, created_ms)| Media {
        media_id: media_id.to_owned(),
        content_type,
        filename,
        size,
        uploader,
        created_ms,
    }))
}

/// Reserve `media_id` for `creator` until `expires_ms`, unless the creator
/// already holds `max_pending` unexpired reservations (then `false`).
/// Expired reservations are dropped meanwhile. The count and the insert are
/// one statement, so only concurrent creates can pass the cap, by a few.
pub async fn create_pending(
    db: &Db,
    media_id: &str,
    creator: &str,
    now_ms: i64,
    expires_ms: i64,
    max_pending: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("DELETE FROM clientapi_pending_media WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        let inserted = sqlx::query(
            "INSERT INTO clientapi_pending_media (media_id, creator, created_ms, expires_ms) \
             SELECT $1, $2, $3, $4 WHERE (SELECT COUNT(*) FROM clientapi_pending_media WHERE creator = $2) < $5",
        )
        .bind(media_id)
        .bind(creator)
        .bind(now_ms)
        .bind(expires_ms)
        .bind(max_pending)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        inserted
    });
    Ok(inserted == 1)
}

/// Whether an upload to a created `mxc://` URI may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller's upload is now the one under way.
    Claimed,
    /// Never created, or expired.
    Unknown,
    /// Created (or uploaded) by someone else.
    NotCreator,
    /// Uploaded already, or an upload is under way.
    Taken,
}

/// Claim the upload to `media_id` for `user`: only its creator, once,
/// before it expires.
pub async fn claim_pending(db: &Db, media_id: &str, user: &str, now_ms: i64) -> Result<Claim, sqlx::Error> {
    let claimed = with_db!(db, pool => {
        sqlx::query(
            "UPDATE clientapi_pending_media SET uploading = TRUE \
             WHERE media_id = $1 AND creator = $2 AND NOT uploading AND expires_ms > $3",
        )
        .bind(media_id)
        .bind(user)
        .bind(now_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    if claimed == 1 {
        return Ok(Claim::Claimed);
    }
    if let Some(media) = get(db, media_id).await? {
        return Ok(if media.uploader == user { Claim::Taken } else { Claim::NotCreator });
    }
    let pending: Option<(String, i64)> = with_db!(db, pool => {
        sqlx::query_as("SELECT creator, expires_ms FROM clientapi_pending_media WHERE media_id = $1")
            .bind(media_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(match pending {
        Some((_, expires_ms)) if expires_ms <= now_ms => Claim::Unknown,
        Some((creator, _)) if creator != user => Claim::NotCreator,
        Some(_) => Claim::Taken,
        None => Claim::Unknown,
    })
}

/// Give a claimed upload back (it failed), so the creator can try again.
pub async fn release_pending(db: &Db, media_id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("UPDATE clientapi_pending_media SET uploading = FALSE WHERE media_id = $1")
            .bind(media_id)
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// The claimed upload's content is in the media store: its reservation
/// becomes an uploaded file.
pub async fn complete_pending(db: &Db, media: &Media) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("DELETE FROM clientapi_pending_media WHERE media_id = $1")
            .bind(&media.media_id)
            .execute(&mut *tx)
            .await?;
        insert_media!(media).execute(&mut *tx).await?;
        tx.commit().await?;
    });
    Ok(())
}

/// Whether `media_id` was created and still waits for its content.
pub async fn is_pending(db: &Db, media_id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT expires_ms FROM clientapi_pending_media WHERE media_id = $1 AND expires_ms > $2")
            .bind(media_id)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.is_some())
}

/// Another server's file, kept in the media store as `file_id`.
#[derive(Debug, Clone)]
pub struct RemoteMedia {
    pub server_name: String,
    pub media_id: String,
    pub file_id: String,
    pub content_type: String,
    pub filename: Option<String>,
    pub size: i64,
    pub created_ms: i64,
}

/// Record a fetched file; the first of two concurrent fetches wins, and the
/// record kept is returned.
pub async fn insert_remote(db: &Db, media: &RemoteMedia) -> Result<RemoteMedia, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO clientapi_remote_media \
             (server_name, media_id, file_id, content_type, filename, size, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (server_name, media_id) DO NOTHING",
        )
        .bind(&media.server_name)
        .bind(&media.media_id)
        .bind(&media.file_id)
        .bind(&media.content_type)
        .bind(media.filename.as_deref())
        .bind(media.size)
        .bind(media.created_ms)
        .execute(pool)
        .await?;
    });
    Ok(get_remote(db, &media.server_name, &media.media_id).await?.unwrap_or_else(|| media.clone()))
}

pub async fn get_remote(db: &Db, server_name: &str, media_id: &str) -> Result<Option<RemoteMedia>, sqlx::Error> {
    let row: Option<(String, String, Option<String>, i64, i64)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT file_id, content_type, filename, size, created_ms FROM clientapi_remote_media \
             WHERE server_name = $1 AND media_id = $2",
        )
        .bind(server_name)
        .bind(media_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|(file_id, content_type, filename, size, created_ms)| RemoteMedia {
        server_name: server_name.to_owned(),
        media_id: media_id.to_owned(),
        file_id,
        content_type,
        filename,
        size,
        created_ms,
    }))
}
