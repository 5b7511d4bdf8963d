//! `clientapi.keychange` (group `federationapi.keychange`): a local user's
//! device list change (a new, renamed or deleted device, new device keys)
//! is queued as an `m.device_list_update` EDU, a change of their
//! cross-signing keys as `m.signing_key_update`, for every other server
//! sharing a room with them. The device's current state is asked of the
//! client API (`clientapi.keys`), which owns it.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#device-management>,
//! <https://spec.matrix.org/v1.16/server-server-api/#m_signing_key_update-schema>

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Handler, Record};
use myelin_clientapi::api::{KeyChange, LOCAL_KEYS_TOPIC, LocalDevices, LocalKeysReply, LocalKeysRequest};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_storage::Db;
use serde_json::json;

use crate::sender::Sender;
use crate::storage::device_lists;
use crate::storage::sender::{self as store, Kind};

pub const GROUP: &str = "federationapi.keychange";

pub struct DeviceListConsumer {
    pub db: Db,
    pub bus: Bus,
    pub server_name: String,
    pub sender: Sender,
}

fn transient(error: impl std::fmt::Display) -> HandleError {
    HandleError::Transient(error.to_string())
}

#[async_trait]
impl Handler for DeviceListConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let change: KeyChange =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable key change: {e}")))?;
        // Other servers' users' changes arrive here too (from their EDUs).
        if !change.device_keys_changed || change.user_id.server_name().as_str() != self.server_name {
            return Ok(());
        }
        let user_id = change.user_id.as_str();
        let destinations =
            device_lists::servers_sharing_a_room(&self.db, user_id, &self.server_name).await.map_err(transient)?;
        if destinations.is_empty() {
            return Ok(());
        }
        let request = LocalKeysRequest::Devices { user_id: change.user_id.clone() };
        let reply: LocalKeysReply = self
            .bus
            .request_json(LOCAL_KEYS_TOPIC, &self.server_name, &request, REQUEST_TIMEOUT)
            .await
            .map_err(transient)?;
        let local: LocalDevices =
            serde_json::from_value(reply).map_err(|e| HandleError::Poison(format!("unexpected devices reply: {e}")))?;
        let (key, edu, stream_id) = if change.device_id.is_empty() {
            if local.master_key.is_none() && local.self_signing_key.is_none() {
                return Ok(());
            }
            let mut content = json!({ "user_id": user_id });
            if let Some(key) = local.master_key {
                content["master_key"] = key;
            }
            if let Some(key) = local.self_signing_key {
                content["self_signing_key"] = key;
            }
            let key = format!("signingkey {user_id} {} {}", record.partition, record.offset);
            (key, json!({ "edu_type": "m.signing_key_update", "content": content }), None)
        } else {
            let Some((stream_id, prev_id)) =
                device_lists::next(&self.db, user_id, record.offset).await.map_err(transient)?
            else {
                return Ok(());
            };
            let device = local.devices.into_iter().find(|device| device["device_id"] == change.device_id.as_str());
            let mut content = json!({
                "user_id": user_id,
                "device_id": change.device_id,
                "stream_id": stream_id,
                "prev_id": prev_id.into_iter().collect::<Vec<_>>(),
                "deleted": device.is_none(),
            });
            for field in ["keys", "device_display_name"] {
                if let Some(value) = device.as_ref().and_then(|device| device.get(field)).filter(|v| !v.is_null()) {
                    content[field] = value.clone();
                }
            }
            let key = format!("devicelist {user_id} {stream_id}");
            (key, json!({ "edu_type": "m.device_list_update", "content": content }), Some((stream_id, record.offset)))
        };
        let text = edu.to_string();
        for destination in &destinations {
            store::enqueue_edu(&self.db, destination, Kind::Edu, &key, &text).await.map_err(transient)?;
        }
        if let Some((stream_id, offset)) = stream_id {
            device_lists::advance(&self.db, user_id, stream_id, offset).await.map_err(transient)?;
        }
        for destination in &destinations {
            self.sender.wake(destination);
        }
        Ok(())
    }
}
