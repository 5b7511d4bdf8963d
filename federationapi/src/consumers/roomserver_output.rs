//! `roomserver.output` (group `federationapi.sender`): keeps which users
//! are joined to each room (from the state deltas) and queues every event a
//! local user sent for each other server in the room, before and after the
//! event (so a kick or a leave still reaches the server it concerns).
//!
//! A redelivered record queues nothing twice while the first copy waits;
//! once delivered, a copy may be sent again, which the destination answers
//! as already known.

use std::collections::BTreeSet;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_roomserver::api::{NewRoomEvent, OutputRecord};
use myelin_storage::Db;
use myelin_types::ruma::UserId;
use serde_json::Value;

use crate::sender::Sender;
use crate::storage::sender as store;

pub const GROUP: &str = "federationapi.sender";

pub struct OutputConsumer {
    pub db: Db,
    pub server_name: String,
    pub sender: Sender,
}

#[async_trait]
impl Handler for OutputConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let OutputRecord::NewRoomEvent(event) =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable output record: {e}")))?;
        self.handle_event(&event).await.map_err(|e| HandleError::Transient(e.to_string()))
    }
}

impl OutputConsumer {
    async fn handle_event(&self, record: &NewRoomEvent) -> Result<(), myelin_storage::sqlx::Error> {
        let room_id = record.event.room_id.as_str();
        let sender = record.event.pdu.get("sender").and_then(Value::as_str).and_then(|s| UserId::parse(s).ok());
        // Backfilled history is old news to everyone else.
        let ours = !record.historical && sender.is_some_and(|sender| sender.server_name().as_str() == self.server_name);
        let mut destinations = BTreeSet::new();
        if ours {
            destinations.extend(store::joined_servers(&self.db, room_id).await?);
        }
        for event in &record.state_delta.added {
            let text = |key: &str| event.pdu.get(key).and_then(Value::as_str);
            if text("type") != Some("m.room.member") {
                continue;
            }
            let Some(user) = text("state_key").and_then(|key| UserId::parse(key).ok()) else { continue };
            if event.pdu.pointer("/content/membership").and_then(Value::as_str) == Some("join") {
                store::set_joined(&self.db, room_id, user.as_str(), user.server_name().as_str()).await?;
            } else {
                store::set_not_joined(&self.db, room_id, user.as_str()).await?;
            }
        }
        for (event_type, state_key) in &record.state_delta.removed {
            if event_type == "m.room.member" {
                store::set_not_joined(&self.db, room_id, state_key).await?;
            }
        }
        if !ours {
            return Ok(());
        }
        destinations.extend(store::joined_servers(&self.db, room_id).await?);
        destinations.remove(&self.server_name);
        if destinations.is_empty() {
            return Ok(());
        }
        let pdu = serde_json::to_string(&record.event.pdu).expect("JSON values serialize");
        for destination in &destinations {
            store::enqueue(&self.db, destination, record.event.event_id.as_str(), &pdu).await?;
        }
        for destination in &destinations {
            self.sender.wake(destination);
        }
        Ok(())
    }
}
