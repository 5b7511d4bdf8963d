//! `clientapi.accountdata`: account data into the read model, then wake
//! the owner's long-polling requests.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::AccountDataUpdate;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;

pub struct AccountDataConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
}

#[async_trait]
impl Handler for AccountDataConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: AccountDataUpdate =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable account data: {e}")))?;
        let stored = self.storage.put_account_data(&update).await.map_err(|e| HandleError::Transient(e.to_string()))?;
        // `None`: the same content again (a redelivery); nothing to tell anyone.
        if let Some(pos) = stored {
            self.notifier.publish(Stream::AccountData, pos, [&update.user_id.to_string()]);
        }
        Ok(())
    }
}
