//! `edu.receipt`: a user's `m.read` or `m.read.private` receipt marks their
//! notifications up to that event read (the whole room, the main timeline
//! or one thread, as the receipt's `thread_id` says) and publishes the new
//! counts.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Handler, Record};
use myelin_clientapi::api::ReceiptUpdate;

use crate::PusherError;
use crate::producers;
use crate::storage::{ReceiptScope, Storage};

pub struct ReceiptConsumer {
    pub storage: Arc<Storage>,
    pub bus: Bus,
}

#[derive(Debug, thiserror::Error)]
enum ReceiptError {
    /// The receipt names an event this consumer has not recorded yet (its
    /// `roomserver.output` record is still on the way): retried.
    #[error("receipt for {0}, not seen yet")]
    UnknownEvent(String),
    #[error(transparent)]
    Pusher(#[from] PusherError),
}

impl ReceiptConsumer {
    async fn apply(&self, receipt: &ReceiptUpdate) -> Result<(), ReceiptError> {
        if !matches!(receipt.receipt_type.as_str(), "m.read" | "m.read.private") {
            return Ok(());
        }
        let Some((room_id, pos)) = self.storage.event_pos(receipt.event_id.as_str()).await? else {
            return Err(ReceiptError::UnknownEvent(receipt.event_id.to_string()));
        };
        if room_id != receipt.room_id.as_str() {
            return Ok(());
        }
        let scope = match receipt.thread_id.as_deref() {
            None => ReceiptScope::Room,
            Some("main") => ReceiptScope::Main,
            Some(root) => ReceiptScope::Thread(root),
        };
        let user_id = receipt.user_id.as_str();
        self.storage.mark_read(user_id, &room_id, pos, scope).await?;
        producers::counts::publish(&self.bus, &self.storage, user_id, &room_id).await?;
        Ok(())
    }
}

#[async_trait]
impl Handler for ReceiptConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let receipt: ReceiptUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable receipt: {e}")))?;
        self.apply(&receipt).await.map_err(|e| HandleError::Transient(e.to_string()))
    }
}
