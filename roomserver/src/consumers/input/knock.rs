//! Knocks on rooms of other servers: the federation API has had the knock
//! accepted (`/make_knock`, `/send_knock`); the room server keeps it as an
//! outlier with the resident server's stripped state, as it keeps remote
//! invites, so the knocker sees the room under `rooms.knock` and can
//! rescind the knock by leaving (`invite.rs`, `leave_remote`).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#knocking-upon-a-room>

use ruma::UserId;
use serde_json::{Value, json};

use super::{InputConsumer, Outcome};
use crate::api::{InputOk, KnockedRemoteRoom, NewRoomEvent, StateDelta, StoredEvent};
use crate::error::RequestError;
use crate::storage::{EventStatus, NewEvent, Tx};

impl InputConsumer {
    pub(super) async fn knocked_remote_room(
        &self,
        correlation_id: &str,
        knock: KnockedRemoteRoom,
    ) -> Result<Outcome, RequestError> {
        let field = |name: &str| knock.event.get(name).and_then(Value::as_str);
        let knocker = field("state_key").and_then(|key| UserId::parse(key).ok());
        let is_knock = field("type") == Some("m.room.member")
            && field("room_id") == Some(knock.room_id.as_str())
            && knock.event.pointer("/content/membership").and_then(Value::as_str) == Some("knock")
            && field("sender") == field("state_key");
        let Some(knocker) = knocker.filter(|user| is_knock && user.server_name() == self.signer.server_name) else {
            return Err(RequestError::BadJson("not a knock of a local user in this room".into()));
        };
        let room_id = knock.room_id.as_str();
        let event_id = knock.event_id.as_str();
        let reply = InputOk::EventSent { event_id: knock.event_id.clone() };
        let mut tx = Tx::write(&self.db).await?;
        let mut outputs = Vec::new();
        // In a room this server is in, the knock comes back over `/send`.
        if tx.room(room_id).await?.is_none() && tx.known_event(event_id).await?.is_none() {
            let mut stored = knock.event;
            stored["unsigned"] = json!({ "knock_room_state": knock.knock_room_state });
            tx.insert_event(&NewEvent {
                event_id,
                room_id,
                event_type: "m.room.member",
                state_key: Some(knocker.as_str()),
                depth: stored.get("depth").and_then(Value::as_i64).unwrap_or(0),
                origin_server_ts: stored.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0),
                // A room this server is not in: its auth events are not here.
                auth_events: None,
                state_before: None,
                state_after: None,
                status: EventStatus::Outlier,
                pdu: &stored.to_string(),
            })
            .await?;
            tx.set_membership(room_id, knocker.as_str(), "knock", event_id).await?;
            let event = StoredEvent { event_id: knock.event_id.clone(), room_id: knock.room_id.clone(), pdu: stored };
            outputs.push(NewRoomEvent {
                event: event.clone(),
                room_version: knock.room_version,
                state_delta: StateDelta { added: vec![event], removed: Vec::new() },
                txn: None,
                historical: false,
            });
        }
        self.commit_with(tx, correlation_id, reply, outputs).await
    }
}
