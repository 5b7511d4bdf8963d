//! `roomserver.output`: every accepted event, in room order, into the read
//! model (a newly joined member is also a device list change); then wake
//! the long-polling requests it concerns.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_roomserver::api::OutputRecord;

use crate::notifier::Notifier;
use crate::storage::{ApplyError, Storage};
use crate::token::Stream;

pub struct OutputConsumer {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
}

#[async_trait]
impl Handler for OutputConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let output: OutputRecord =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable output record: {e}")))?;
        match output {
            OutputRecord::NewRoomEvent(new) => match self.storage.apply(&new).await {
                Ok(Some(applied)) => {
                    // History goes before every token handed out: nothing to wake.
                    if !new.historical {
                        self.notifier.publish(Stream::Events, applied.pos, &applied.users);
                    }
                    // A new member's devices are news to everyone who now
                    // shares the room with them.
                    if let Some(pos) = applied.device_list_pos {
                        self.notifier.publish(Stream::DeviceLists, pos, &applied.users);
                    }
                    Ok(())
                }
                // Seen before: a redelivery changes nothing.
                Ok(None) => Ok(()),
                Err(ApplyError::Malformed(reason)) => {
                    Err(HandleError::Poison(format!("event {}: {reason}", new.event.event_id)))
                }
                Err(ApplyError::Db(error)) => Err(HandleError::Transient(error.to_string())),
            },
        }
    }
}
