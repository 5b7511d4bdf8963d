//! `federationapi.todevice` (group `clientapi.todevice`): to-device
//! messages other servers sent to local users, each onto `edu.todevice`
//! once per device it names (`*`: every device of the recipient, which
//! only the client API knows). The federation API publishes only messages
//! for local users.

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Handler, Record};
use myelin_storage::Db;
use serde_json::json;

use crate::api::ToDeviceMessage;
use crate::producers;
use crate::storage::devices;

pub const GROUP: &str = "clientapi.todevice";

pub struct RemoteToDeviceConsumer {
    pub db: Db,
    pub bus: Bus,
}

#[async_trait]
impl Handler for RemoteToDeviceConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let message: ToDeviceMessage =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable to-device message: {e}")))?;
        let transient = |e: &dyn std::fmt::Display| HandleError::Transient(e.to_string());
        let targets = if message.device_id == "*" {
            let all = devices::list(&self.db, message.user_id.as_str()).await.map_err(|e| transient(&e))?;
            all.into_iter().map(|device| device.device_id).collect()
        } else {
            vec![message.device_id.clone()]
        };
        for device_id in targets {
            // Distinct per device, and the same when the record is redelivered.
            let message_id = json!([message.message_id, device_id]).to_string();
            let expanded = ToDeviceMessage { device_id, message_id, ..message.clone() };
            producers::edu::to_device(&self.bus, &expanded).await.map_err(|e| transient(&e))?;
        }
        Ok(())
    }
}
