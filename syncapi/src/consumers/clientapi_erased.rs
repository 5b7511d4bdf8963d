//! `clientapi.erased`: accounts deactivated with `erase`, into the read
//! model (their events are served redacted from then on; see
//! `routing::unsigned`).

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::UserErased;

use crate::storage::Storage;

pub struct ErasedConsumer {
    pub storage: Arc<Storage>,
}

#[async_trait]
impl Handler for ErasedConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let erased: UserErased = record.json().map_err(|e| HandleError::Poison(format!("undecodable erasure: {e}")))?;
        self.storage.erase_user(erased.user_id.as_str()).await.map_err(|e| HandleError::Transient(e.to_string()))
    }
}
