//! `pusher_room_content`: per-room limits on what push gateways receive,
//! set by an admin (DESIGN.md invariant 9).

use myelin_config::PushContent;
use myelin_storage::{sqlx, with_db};

use super::Storage;
use crate::PusherError;

fn name(level: PushContent) -> &'static str {
    match level {
        PushContent::None => "none",
        PushContent::EventIdOnly => "event_id_only",
        PushContent::Metadata => "metadata",
        PushContent::Full => "full",
    }
}

fn parse(text: &str) -> Result<PushContent, PusherError> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|_| PusherError::Corrupt(format!("stored push content level {text:?}")))
}

impl Storage {
    /// The room's limit, if an admin set one.
    pub async fn room_content(&self, room_id: &str) -> Result<Option<PushContent>, PusherError> {
        let found: Option<String> = with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT content FROM pusher_room_content WHERE room_id = $1")
                .bind(room_id)
                .fetch_optional(pool)
                .await?
        });
        found.as_deref().map(parse).transpose()
    }

    /// Set (`Some`) or clear (`None`) the room's limit.
    pub async fn set_room_content(&self, room_id: &str, level: Option<PushContent>) -> Result<(), PusherError> {
        with_db!(&self.db, pool => {
            match level {
                Some(level) => sqlx::query(
                    "INSERT INTO pusher_room_content (room_id, content) VALUES ($1, $2) \
                     ON CONFLICT (room_id) DO UPDATE SET content = excluded.content",
                )
                .bind(room_id)
                .bind(name(level))
                .execute(pool)
                .await?,
                None => sqlx::query("DELETE FROM pusher_room_content WHERE room_id = $1")
                    .bind(room_id)
                    .execute(pool)
                    .await?,
            };
        });
        Ok(())
    }
}
