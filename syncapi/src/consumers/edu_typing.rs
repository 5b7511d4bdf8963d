//! `edu.typing`: typing state in memory, then wake the room's members. A
//! timer per typing start wakes them again when it lapses.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::TypingUpdate;
use myelin_types::clock::SharedClock;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;
use crate::typing::Typing;

#[derive(Clone)]
pub struct TypingConsumer {
    pub typing: Arc<Typing>,
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
    pub clock: SharedClock,
}

impl TypingConsumer {
    async fn members(&self, room_id: &str) -> Result<Vec<String>, HandleError> {
        self.storage.joined_users(room_id).await.map_err(|e| HandleError::Transient(e.to_string()))
    }

    /// Check for lapsed typing once `expires_ms` has passed. The timer only
    /// schedules the check; whether typing lapsed is the bus clock's call.
    fn expire_at(&self, expires_ms: u64) {
        let this = self.clone();
        let delay = expires_ms.saturating_sub(self.clock.now_ms());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            if let Some((pos, rooms)) = this.typing.expire(this.clock.now_ms()) {
                for room_id in rooms {
                    // The position is published even if nobody can be woken,
                    // so that the next sync still sees the change.
                    let members = this.members(&room_id).await.unwrap_or_else(|error| {
                        tracing::warn!(%room_id, ?error, "could not wake members after typing lapsed");
                        Vec::new()
                    });
                    this.notifier.publish(Stream::Typing, pos, &members);
                }
            }
        });
    }
}

#[async_trait]
impl Handler for TypingConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: TypingUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable typing update: {e}")))?;
        // Members first: a failure here retries the record before anything changed.
        let members = self.members(update.room_id.as_str()).await?;
        if let Some(pos) = self.typing.apply(&update, self.clock.now_ms()) {
            self.notifier.publish(Stream::Typing, pos, &members);
        }
        if update.typing {
            self.expire_at(update.expires_ms);
        }
        Ok(())
    }
}
