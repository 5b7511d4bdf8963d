//! Records on `roomserver.output`, keyed by room id so that consumers see a
//! room's events in order.

use myelin_bus::{Bus, HandleError};

use crate::api::{NewRoomEvent, OUTPUT_TOPIC, OutputRecord, StateDelta, StoredEvent, TxnRef};

/// The output record of an accepted local event. Local events extend the
/// room linearly, so a state event is exactly what enters current state.
pub fn new_room_event(event: StoredEvent, is_state: bool, room_version: String, txn: Option<TxnRef>) -> NewRoomEvent {
    let added = if is_state { vec![event.clone()] } else { Vec::new() };
    NewRoomEvent { event, room_version, state_delta: StateDelta { added, removed: Vec::new() }, txn, historical: false }
}

#[derive(Clone)]
pub struct OutputProducer {
    bus: Bus,
}

impl OutputProducer {
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }

    /// Produce the records in order. A failure is transient: the redelivered
    /// request produces them again, and consumers dedupe by event id.
    pub async fn publish(&self, records: Vec<NewRoomEvent>) -> Result<(), HandleError> {
        for record in records {
            let key = record.event.room_id.to_string();
            self.bus
                .produce_json(OUTPUT_TOPIC, &key, &OutputRecord::NewRoomEvent(record))
                .await
                .map_err(|e| HandleError::Transient(format!("producing output: {e}")))?;
        }
        Ok(())
    }
}
