//! `pusher.counts`: each user's notification counts per room, kept for
//! `/sync`. A record is the whole value, so a redelivery changes nothing.
//! No wake-up: counts change with events and receipts, which wake `/sync`
//! themselves, and the next response carrying the room shows them.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_pusher::api::RoomCounts;

use crate::storage::Storage;

pub struct CountsConsumer {
    pub storage: Arc<Storage>,
}

fn decode(record: &Record) -> Result<RoomCounts, HandleError> {
    record.json().map_err(|e| HandleError::Poison(format!("undecodable counts: {e}")))
}

#[async_trait]
impl Handler for CountsConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        self.storage.put_counts(&[decode(record)?]).await.map_err(|e| HandleError::Transient(e.to_string()))
    }

    /// A message in a big room moves hundreds of counts at once: one write.
    fn batches(&self) -> bool {
        true
    }

    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandleError> {
        let counts = records.iter().map(decode).collect::<Result<Vec<_>, _>>()?;
        self.storage.put_counts(&counts).await.map_err(|e| HandleError::Transient(e.to_string()))
    }
}
