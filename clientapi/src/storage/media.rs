//! `clientapi_media`: what is known about each uploaded file; the bytes
//! live in the media store (`media.rs`).

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
