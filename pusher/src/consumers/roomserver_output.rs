//! `roomserver.output`: each event updates the room read model and, unless
//! it is historical, becomes notifications, outbox rows and new counts,
//! all in one transaction keyed by the event id (a redelivery finds it and
//! only publishes the counts again, in case they were lost).

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Handler, Record};
use myelin_config::PushContent;
use myelin_roomserver::api::OutputRecord;
use myelin_types::ruma::OwnedServerName;

use crate::PusherError;
use crate::delivery::Delivery;
use crate::metrics;
use crate::notify::Notifier;
use crate::producers;
use crate::room_cache::RoomCache;
use crate::rules::PushRules;
use crate::storage::Storage;

pub struct OutputConsumer {
    pub storage: Arc<Storage>,
    pub rules: Arc<PushRules>,
    pub bus: Bus,
    pub delivery: Arc<Delivery>,
    pub server_name: OwnedServerName,
    pub content: PushContent,
    pub max_push_age_ms: i64,
    pub rooms: RoomCache,
}

impl OutputConsumer {
    async fn apply(&self, record: &Record) -> Result<(), PusherError> {
        let OutputRecord::NewRoomEvent(new) =
            record.json().map_err(|e| PusherError::Corrupt(format!("undecodable output record: {e}")))?;
        let room_id = new.event.room_id.as_str();
        let event_id = new.event.event_id.as_str();
        if self.storage.event_pos(event_id).await?.is_some() {
            let users = self.storage.notified_users(event_id).await?;
            let users: Vec<&str> = users.iter().map(String::as_str).collect();
            return producers::counts::publish_many(&self.bus, &self.storage, room_id, &users).await;
        }
        let mut room = self.rooms.take(&self.storage, room_id).await?;
        let notifier = Notifier {
            storage: &self.storage,
            rules: &self.rules,
            server_name: &self.server_name,
            content: self.content,
            max_push_age_ms: self.max_push_age_ms,
        };
        let now_ms = self.bus.clock().now_ms() as i64;
        let outcome = notifier.evaluate(&new, &mut room, now_ms).await?;
        if !self.storage.write_event(&outcome.write).await? {
            return Ok(());
        }
        self.rooms.put(room_id, room);
        metrics::notifications(outcome.write.notifications.len());
        if !outcome.write.deliveries.is_empty() {
            self.delivery.wake();
        }
        let notified: Vec<&str> = outcome.notified.iter().map(String::as_str).collect();
        producers::counts::publish_many(&self.bus, &self.storage, room_id, &notified).await
    }
}

#[async_trait]
impl Handler for OutputConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        self.apply(record).await.map_err(|e| match e {
            PusherError::Corrupt(reason) => HandleError::Poison(reason),
            other => HandleError::Transient(other.to_string()),
        })
    }
}
