//! `roomserver.output` (group `clientapi.directory`): the room summaries
//! the public directory shows (name, topic, canonical alias, avatar, join
//! rule, history visibility, guest access, room type, joined members),
//! taken from each event's change to the current state.

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_roomserver::api::{NewRoomEvent, OutputRecord};
use myelin_storage::Db;
use serde_json::Value;

use crate::storage::directory::{self, Field, SummaryChange};

pub struct DirectoryConsumer {
    pub db: Db,
}

/// The summary field an `(event type, state key)` sets, and the content key holding it.
fn field_of(event_type: &str, state_key: &str) -> Option<(Field, &'static str)> {
    if !state_key.is_empty() {
        return None;
    }
    Some(match event_type {
        "m.room.name" => (Field::Name, "name"),
        "m.room.topic" => (Field::Topic, "topic"),
        "m.room.canonical_alias" => (Field::CanonicalAlias, "alias"),
        "m.room.avatar" => (Field::AvatarUrl, "url"),
        "m.room.join_rules" => (Field::JoinRule, "join_rule"),
        "m.room.history_visibility" => (Field::HistoryVisibility, "history_visibility"),
        "m.room.guest_access" => (Field::GuestAccess, "guest_access"),
        "m.room.create" => (Field::RoomType, "type"),
        _ => return None,
    })
}

/// What one record changes in the room's summary.
fn changes(record: &NewRoomEvent) -> Vec<SummaryChange> {
    let mut out = Vec::new();
    for event in &record.state_delta.added {
        let text = |key: &str| event.pdu.get(key).and_then(Value::as_str).unwrap_or_default();
        let (event_type, state_key) = (text("type"), text("state_key"));
        let content = &event.pdu["content"];
        if event_type == "m.room.member" {
            let joined = content.get("membership").and_then(Value::as_str) == Some("join");
            out.push(SummaryChange::Member { user_id: state_key.to_owned(), joined });
        } else if let Some((field, key)) = field_of(event_type, state_key) {
            // An empty string unsets a name, topic or avatar as the spec says.
            let value = content.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
            out.push(SummaryChange::Set(field, value));
        }
    }
    for (event_type, state_key) in &record.state_delta.removed {
        if event_type == "m.room.member" {
            out.push(SummaryChange::Member { user_id: state_key.clone(), joined: false });
        } else if let Some((field, _)) = field_of(event_type, state_key) {
            out.push(SummaryChange::Set(field, None));
        }
    }
    out
}

#[async_trait]
impl Handler for DirectoryConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let output: OutputRecord =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable output record: {e}")))?;
        let OutputRecord::NewRoomEvent(new) = output;
        let changes = changes(&new);
        if changes.is_empty() {
            return Ok(());
        }
        directory::apply(&self.db, new.event.room_id.as_str(), &changes)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use myelin_roomserver::api::{StateDelta, StoredEvent};
    use serde_json::json;

    use super::*;

    fn stored(pdu: Value) -> StoredEvent {
        StoredEvent { event_id: "$e".try_into().unwrap(), room_id: "!r:x".try_into().unwrap(), pdu }
    }

    #[test]
    fn state_changes_become_summary_changes() {
        let name = stored(json!({"type": "m.room.name", "state_key": "", "content": {"name": "Tea"}}));
        let topic = stored(json!({"type": "m.room.topic", "state_key": "", "content": {"topic": ""}}));
        let join = stored(json!({"type": "m.room.member", "state_key": "@a:x", "content": {"membership": "join"}}));
        let other = stored(json!({"type": "m.room.name", "state_key": "nope", "content": {"name": "x"}}));
        let record = NewRoomEvent {
            event: name.clone(),
            room_version: "12".to_owned(),
            state_delta: StateDelta {
                added: vec![name, topic, join, other],
                removed: vec![
                    ("m.room.member".to_owned(), "@b:x".to_owned()),
                    ("m.room.avatar".to_owned(), String::new()),
                ],
            },
            txn: None,
            historical: false,
        };
        assert_eq!(
            changes(&record),
            [
                SummaryChange::Set(Field::Name, Some("Tea".to_owned())),
                SummaryChange::Set(Field::Topic, None),
                SummaryChange::Member { user_id: "@a:x".to_owned(), joined: true },
                SummaryChange::Member { user_id: "@b:x".to_owned(), joined: false },
                SummaryChange::Set(Field::AvatarUrl, None),
            ]
        );
    }
}
