//! `edu.typing`, `edu.receipt`, `edu.todevice` and `edu.presence`: a local
//! user's typing notice or public read receipt is queued as an EDU for
//! every other server with a member in the room, a to-device message for
//! another server's user for that server, and a presence change for every
//! other server sharing a room with the user. Remote users' updates (which arrive over
//! federation and are published on the same topics) and private receipts
//! stay here.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#typing-notifications>,
//! <https://spec.matrix.org/v1.16/server-server-api/#receipts>,
//! <https://spec.matrix.org/v1.16/server-server-api/#send-to-device-messaging>,
//! <https://spec.matrix.org/v1.16/server-server-api/#presence>

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::{PresenceUpdate, ReceiptUpdate, ToDeviceMessage, TypingUpdate};
use myelin_storage::Db;
use myelin_types::clock::SharedClock;
use myelin_types::ruma::{RoomId, UserId};
use serde_json::{Value, json};

use crate::sender::{Sender, TYPING_EXPIRES};
use crate::storage::device_lists;
use crate::storage::sender::{self as store, Kind};

pub const TYPING_GROUP: &str = "federationapi.typing";
pub const RECEIPT_GROUP: &str = "federationapi.receipts";
pub const TO_DEVICE_GROUP: &str = "federationapi.todevice";
pub const PRESENCE_GROUP: &str = "federationapi.presence";

/// Queues local users' typing notices and public receipts for other servers.
pub struct EduConsumer {
    pub db: Db,
    pub server_name: String,
    pub sender: Sender,
}

pub struct TypingConsumer(pub std::sync::Arc<EduConsumer>);
pub struct ReceiptConsumer(pub std::sync::Arc<EduConsumer>);
pub struct ToDeviceConsumer(pub std::sync::Arc<EduConsumer>);
pub struct PresenceConsumer {
    pub edus: std::sync::Arc<EduConsumer>,
    pub clock: SharedClock,
}

fn undecodable(error: impl std::fmt::Display) -> HandleError {
    HandleError::Poison(format!("undecodable EDU record: {error}"))
}

#[async_trait]
impl Handler for TypingConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: TypingUpdate = record.json().map_err(undecodable)?;
        let edu = json!({
            "edu_type": "m.typing",
            "content": {"room_id": update.room_id, "user_id": update.user_id, "typing": update.typing},
            TYPING_EXPIRES: update.expires_ms,
        });
        let key = format!("typing {} {} {} {}", update.room_id, update.user_id, update.typing, update.expires_ms);
        self.0.queue(&update.room_id, &update.user_id, Kind::Typing, &key, &edu).await
    }
}

#[async_trait]
impl Handler for ReceiptConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: ReceiptUpdate = record.json().map_err(undecodable)?;
        if update.receipt_type != "m.read" {
            // Private receipts are for their owner alone.
            return Ok(());
        }
        let mut data = json!({ "ts": update.ts });
        if let Some(thread_id) = &update.thread_id {
            data["thread_id"] = json!(thread_id);
        }
        let receipt = json!({ "event_ids": [update.event_id], "data": data });
        let edu = json!({
            "edu_type": "m.receipt",
            "content": { update.room_id.as_str(): { "m.read": { update.user_id.as_str(): receipt } } },
        });
        let thread = update.thread_id.as_deref().unwrap_or("");
        let key = format!("receipt {} {} {} {thread}", update.room_id, update.user_id, update.event_id);
        self.0.queue(&update.room_id, &update.user_id, Kind::Edu, &key, &edu).await
    }
}

#[async_trait]
impl Handler for ToDeviceConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let message: ToDeviceMessage = record.json().map_err(undecodable)?;
        let destination = message.user_id.server_name().as_str();
        if destination == self.0.server_name || message.sender.server_name().as_str() != self.0.server_name {
            return Ok(());
        }
        let edu = json!({
            "edu_type": "m.direct_to_device",
            "content": {
                "sender": message.sender,
                "type": message.event_type,
                "message_id": message.message_id,
                "messages": { message.user_id.as_str(): { message.device_id.as_str(): message.content } },
            },
        });
        let key = format!("todevice {}", message.message_id);
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        store::enqueue_edu(&self.0.db, destination, Kind::Edu, &key, &edu.to_string()).await.map_err(transient)?;
        self.0.sender.wake(destination);
        Ok(())
    }
}

#[async_trait]
impl Handler for PresenceConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let update: PresenceUpdate = record.json().map_err(undecodable)?;
        // Other servers' users' presence arrives here too (from their EDUs).
        if update.user_id.server_name().as_str() != self.edus.server_name {
            return Ok(());
        }
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let destinations =
            device_lists::servers_sharing_a_room(&self.edus.db, update.user_id.as_str(), &self.edus.server_name)
                .await
                .map_err(transient)?;
        let edu =
            json!({ "edu_type": "m.presence", "content": { "push": [presence_entry(&update, self.clock.now_ms())] } });
        let key = format!("presence {} {} {}", update.user_id, record.partition, record.offset);
        let edu = edu.to_string();
        for destination in &destinations {
            store::enqueue_edu(&self.edus.db, destination, Kind::Edu, &key, &edu).await.map_err(transient)?;
            self.edus.sender.wake(destination);
        }
        Ok(())
    }
}

/// An `m.presence` EDU's entry for `update`, as seen at `now_ms`.
fn presence_entry(update: &PresenceUpdate, now_ms: u64) -> Value {
    let mut entry = json!({
        "user_id": update.user_id,
        "presence": update.presence,
        "last_active_ago": now_ms.saturating_sub(update.last_active_ts),
        "currently_active": update.presence == "online",
    });
    if let Some(status) = &update.status_msg {
        entry["status_msg"] = json!(status);
    }
    entry
}

impl EduConsumer {
    async fn queue(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        kind: Kind,
        key: &str,
        edu: &Value,
    ) -> Result<(), HandleError> {
        if user_id.server_name().as_str() != self.server_name {
            return Ok(());
        }
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let destinations = store::joined_servers(&self.db, room_id.as_str()).await.map_err(transient)?;
        let edu = edu.to_string();
        for destination in destinations.iter().filter(|server| **server != self.server_name) {
            store::enqueue_edu(&self.db, destination, kind, key, &edu).await.map_err(transient)?;
            self.sender.wake(destination);
        }
        Ok(())
    }
}
