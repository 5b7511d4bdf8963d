//! `edu.todevice`: messages into their device's inbox, then wake the owner.
//! Messages for other servers' users are the federation API's to send.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::ToDeviceMessage;

use crate::notifier::Notifier;
use crate::storage::Storage;
use crate::token::Stream;

pub struct ToDeviceConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
    pub server_name: String,
}

#[async_trait]
impl Handler for ToDeviceConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let message: ToDeviceMessage =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable to-device message: {e}")))?;
        if message.user_id.server_name().as_str() != self.server_name {
            return Ok(());
        }
        let stored = self.storage.put_to_device(&message).await.map_err(|e| HandleError::Transient(e.to_string()))?;
        if let Some(pos) = stored {
            self.notifier.publish(Stream::ToDevice, pos, [&message.user_id.to_string()]);
        }
        Ok(())
    }
}
