//! Answers `clientapi.keys`: local users' end-to-end keys, so that the
//! federation API serves `/user/devices`, `/user/keys/query` and
//! `/user/keys/claim` without reading our tables. The federation API has
//! already refused requests naming other servers' users.

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Record, Responder};
use myelin_storage::Db;
use serde_json::{Value, json};

use crate::api::{LocalKeysReply, LocalKeysRequest};
use crate::keys;

pub const GROUP: &str = "clientapi.keys";

pub struct KeysResponder {
    pub db: Db,
    pub bus: Bus,
}

#[async_trait]
impl Responder for KeysResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let request: LocalKeysRequest =
            request.json().map_err(|e| HandleError::Poison(format!("bad keys request: {e}")))?;
        let transient = |e: crate::ClientApiError| HandleError::Transient(e.to_string());
        let reply: LocalKeysReply = match request {
            LocalKeysRequest::Devices { user_id } => {
                let devices = keys::local_devices(&self.db, &user_id).await.map_err(transient)?;
                serde_json::to_value(devices).expect("devices serialize")
            }
            LocalKeysRequest::Query { device_keys } => {
                Value::Object(keys::query_local(&self.db, &device_keys, None).await.map_err(transient)?)
            }
            // A claim redelivered after a crash hands out another key: the
            // asking server gave up on the first answer, which is lost.
            LocalKeysRequest::Claim { one_time_keys } => {
                let claimed = keys::claim_local(&self.db, &self.bus, &one_time_keys).await.map_err(transient)?;
                json!({ "one_time_keys": claimed })
            }
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
