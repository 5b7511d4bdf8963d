//! `clientapi_media`: what is known about each uploaded file, and
//! `clientapi_remote_media`: other servers' files fetched for local
//! clients; the bytes live in the media store (`media.rs`).

use myelin_storage::{Db, sqlx, with_db};

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

pub async fn insert(db: &Db, media: &Media) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO clientapi_media (media_id, content_type, filename, size, uploader, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&media.media_id)
        .bind(&media.content_type)
        .bind(media.filename.as_deref())
        .bind(media.size)
        .bind(&media.uploader)
        .bind(media.created_ms)
        .execute(pool)
        .await?;
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
