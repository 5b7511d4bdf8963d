//! `edu.receipt`: receipts into the read model, then wake the room's members.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::ReceiptUpdate;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;

pub struct ReceiptConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
}

#[async_trait]
impl Handler for ReceiptConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let receipt: ReceiptUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable receipt: {e}")))?;
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        // Members first: a failure here retries the record before anything changed.
        let members = self.storage.joined_users(receipt.room_id.as_str()).await.map_err(transient)?;
        // `None`: the same receipt again (a redelivery); nothing to tell anyone.
        if let Some(pos) = self.storage.put_receipt(&receipt).await.map_err(transient)? {
            self.notifier.publish(Stream::Receipts, pos, &members);
        }
        Ok(())
    }
}
