//! `clientapi.keychange`: key counts and device list changes into the read
//! model, then wake those a device list change concerns.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::KeyChange;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;

pub struct KeyChangeConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
}

#[async_trait]
impl Handler for KeyChangeConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let change: KeyChange =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable key change: {e}")))?;
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let concerned = self.storage.users_sharing_a_room(change.user_id.as_str()).await.map_err(transient)?;
        if let Some(pos) = self.storage.put_key_change(&change).await.map_err(transient)? {
            self.notifier.publish(Stream::DeviceLists, pos, &concerned);
        }
        Ok(())
    }
}
