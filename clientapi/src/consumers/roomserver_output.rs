//! `roomserver.output` (group `clientapi.directory`): the room summaries
//! the public directory shows (name, topic, canonical alias, avatar, join
//! rule, history visibility, guest access, room type, joined members),
//! taken from each event's change to the current state; and the guests
//! of this server leave a room whose guest access stops being `can_join`.

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Handler, Record};
use myelin_roomserver::api::{NewRoomEvent, OutputRecord, SendEvent};
use myelin_storage::Db;
use myelin_types::ruma::OwnedUserId;
use serde_json::{Value, json};

use crate::error::ClientApiError;
use crate::producers::roomserver;
use crate::storage::accounts;
use crate::storage::directory::{self, Field, SummaryChange};

pub struct DirectoryConsumer {
    pub db: Db,
    pub bus: Bus,
    pub server_name: String,
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

/// Whether the record ends guest access: `m.room.guest_access` set to
/// anything but `can_join`, or removed.
fn ends_guest_access(record: &NewRoomEvent) -> bool {
    let is_guest_access =
        |event_type: &str, state_key: &str| event_type == "m.room.guest_access" && state_key.is_empty();
    let set_off = record.state_delta.added.iter().any(|event| {
        let text = |key: &str| event.pdu.get(key).and_then(Value::as_str).unwrap_or_default();
        is_guest_access(text("type"), text("state_key"))
            && event.pdu["content"].get("guest_access").and_then(Value::as_str) != Some("can_join")
    });
    set_off || record.state_delta.removed.iter().any(|(event_type, state_key)| is_guest_access(event_type, state_key))
}

/// What one record changes in the room's summary.
fn changes(record: &NewRoomEvent) -> Vec<SummaryChange> {
    let mut out = Vec::new();
    for event in &record.state_delta.added {
        let text = |key: &str| event.pdu.get(key).and_then(Value::as_str).unwrap_or_default();
        let (event_type, state_key) = (text("type"), text("state_key"));
        let content = &event.pdu["content"];
        if event_type == "m.room.member" {
            let user_id = state_key.to_owned();
            if content.get("membership").and_then(Value::as_str) == Some("join") {
                let profile = |key: &str| content.get(key).and_then(Value::as_str).map(str::to_owned);
                out.push(SummaryChange::Joined {
                    user_id,
                    displayname: profile("displayname"),
                    avatar_url: profile("avatar_url"),
                });
            } else {
                out.push(SummaryChange::Left { user_id });
            }
        } else if let Some((field, key)) = field_of(event_type, state_key) {
            // An empty string unsets a name, topic or avatar as the spec says.
            let value = content.get(key).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
            out.push(SummaryChange::Set(field, value));
        }
    }
    for (event_type, state_key) in &record.state_delta.removed {
        if event_type == "m.room.member" {
            out.push(SummaryChange::Left { user_id: state_key.clone() });
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
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        if ends_guest_access(&new) {
            self.guests_leave(&new).await?;
        }
        Ok(())
    }
}

impl DirectoryConsumer {
    /// Make this server's guests leave the room: the members read model is
    /// current up to this record, and the room server refuses any guest
    /// join after it. A redelivered record finds them gone already (or the
    /// room server refuses a second leave, which is skipped).
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
    async fn guests_leave(&self, record: &NewRoomEvent) -> Result<(), HandleError> {
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let room_id = &record.event.room_id;
        let members =
            directory::joined_local_members(&self.db, room_id.as_str(), &self.server_name).await.map_err(transient)?;
        for member in members {
            let Ok(user_id) = OwnedUserId::try_from(member) else { continue };
            if !accounts::is_guest(&self.db, user_id.localpart()).await.map_err(transient)? {
                continue;
            }
            let request = SendEvent {
                room_id: room_id.clone(),
                sender: user_id.clone(),
                event_type: "m.room.member".to_owned(),
                state_key: Some(user_id.to_string()),
                content: json!({ "membership": "leave" }),
                txn: None,
                sender_is_guest: true,
                origin_server_ts: None,
            };
            match roomserver::send_event(&self.bus, request).await {
                Ok(_) => {}
                Err(ClientApiError::Matrix(error)) => {
                    tracing::warn!(%room_id, %user_id, %error, "a guest could not be made to leave");
                }
                Err(other) => return Err(HandleError::Transient(other.to_string())),
            }
        }
        Ok(())
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
        let join = stored(json!({"type": "m.room.member", "state_key": "@a:x",
            "content": {"membership": "join", "displayname": "Ann"}}));
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
                SummaryChange::Joined {
                    user_id: "@a:x".to_owned(),
                    displayname: Some("Ann".to_owned()),
                    avatar_url: None
                },
                SummaryChange::Left { user_id: "@b:x".to_owned() },
                SummaryChange::Set(Field::AvatarUrl, None),
            ]
        );
    }
}
