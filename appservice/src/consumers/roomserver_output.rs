//! `roomserver.output`: each new timeline event is queued for every
//! application service interested in it, in the transaction that also
//! records how the event changed the room's local memberships and aliases;
//! the bus commits the record's offset only after that. Backfilled
//! (`historical`) events are history, not news, and are skipped.
//!
//! Membership comes from this component's own table, kept from the state
//! deltas of the very records it consumes, rather than from a
//! `roomserver.query` per event: it is exact at each event (the room's
//! records arrive in room order), costs one indexed read of the room's
//! local members instead of a bus round trip, and keeps working while the
//! room server is busy. It holds every local user's joins and invites,
//! not only today's namespaces, so a registration added later finds its
//! users' rooms.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_config::appservice::AppService;
use myelin_roomserver::api::OutputRecord;
use myelin_types::events::client_event;
use myelin_types::ruma::OwnedServerName;
use tokio::sync::Notify;

use crate::AppServiceError;
use crate::interest::{self, EventFacts, RoomChanges};
use crate::metrics;
use crate::storage::Storage;
use crate::storage::rooms::EventWrite;

/// A service that receives transactions, and the wake-up of its sender.
pub struct Target {
    pub service: AppService,
    pub wake: Arc<Notify>,
}

/// Queues room events for the services interested in them.
pub struct OutputConsumer {
    pub storage: Arc<Storage>,
    pub targets: Arc<[Target]>,
    pub server_name: OwnedServerName,
}

impl OutputConsumer {
    async fn apply(&self, record: &Record) -> Result<(), AppServiceError> {
        let OutputRecord::NewRoomEvent(new) =
            record.json().map_err(|e| AppServiceError::Corrupt(format!("undecodable output record: {e}")))?;
        if new.historical {
            return Ok(());
        }
        let room_id = new.event.room_id.as_str();
        let event_id = new.event.event_id.as_str();
        let changes = RoomChanges::of(&new.state_delta, &self.server_name);
        let facts = EventFacts::of(&new.event.pdu, room_id);
        let interested = self.interested(&facts, &changes).await?;
        if changes.is_empty() && interested.is_empty() {
            return Ok(());
        }
        let event = client_event(&new.event.pdu, event_id, room_id).to_string();
        let services: Vec<&str> = interested.iter().map(|t| t.service.id()).collect();
        let write = EventWrite { room_id, changes: &changes, event_id, event: &event, services: &services };
        self.storage.write_event(&write).await?;
        for target in interested {
            metrics::queued(target.service.id());
            target.wake.notify_one();
        }
        Ok(())
    }

    /// The services interested in the event, judged on the room as it is
    /// just after it; the members are read only when the cheaper rules
    /// left a service undecided.
    async fn interested(&self, facts: &EventFacts<'_>, changes: &RoomChanges) -> Result<Vec<&Target>, AppServiceError> {
        if self.targets.is_empty() {
            return Ok(Vec::new());
        }
        let aliases = match &changes.aliases {
            Some(aliases) => aliases.clone(),
            None => self.storage.aliases(facts.room_id).await?,
        };
        let (mut interested, undecided): (Vec<&Target>, Vec<&Target>) =
            self.targets.iter().partition(|t| facts.concerns(&t.service, &aliases, &self.server_name));
        if !undecided.is_empty() {
            let mut members = self.storage.members(facts.room_id).await?;
            changes.apply_to(&mut members);
            interested.extend(undecided.into_iter().filter(|t| interest::has_member(&t.service, &members)));
        }
        Ok(interested)
    }
}

#[async_trait]
impl Handler for OutputConsumer {
    /// Queue one room event for the services interested in it.
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        self.apply(record).await.map_err(HandleError::from)
    }
}
