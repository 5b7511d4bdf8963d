//! `edu.presence`: other servers' users' presence (from the federation
//! API) into the presence stream, then wake those who share a room with
//! them. Local users' presence is stored when it is set; their records on
//! this topic are for the federation API.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::PresenceUpdate;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;

pub struct PresenceConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
    pub server_name: String,
}

#[async_trait]
impl Handler for PresenceConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: PresenceUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable presence: {e}")))?;
        if update.user_id.server_name().as_str() == self.server_name {
            return Ok(());
        }
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let user_id = update.user_id.as_str();
        let concerned = self.storage.users_sharing_a_room(user_id).await.map_err(transient)?;
        let last_active_ts = i64::try_from(update.last_active_ts).unwrap_or(i64::MAX);
        // A redelivered record finds the same presence stored: no new position.
        let stored = self
            .storage
            .put_presence(user_id, &update.presence, update.status_msg.as_deref(), false, last_active_ts)
            .await
            .map_err(transient)?;
        if let Some(pos) = stored {
            self.notifier.publish(Stream::Presence, pos, &concerned);
        }
        Ok(())
    }
}
