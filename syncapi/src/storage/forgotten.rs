//! Forgotten rooms, from `clientapi.forgotten`: read through
//! [`Storage::membership_changes`], which leaves out every membership up to
//! the forgotten one.

use myelin_clientapi::api::RoomForgotten;
use myelin_storage::{sqlx, with_db};

use super::Storage;

impl Storage {
    /// Record that the user forgot the room as of a membership event; a
    /// redelivered record changes nothing.
    pub async fn forget_room(&self, record: &RoomForgotten) -> Result<(), sqlx::Error> {
        with_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO syncapi_forgotten (user_id, room_id, event_id) VALUES ($1, $2, $3) \
                 ON CONFLICT (user_id, room_id, event_id) DO NOTHING",
            )
            .bind(record.user_id.as_str())
            .bind(record.room_id.as_str())
            .bind(record.event_id.as_str())
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}
