//! Answers `roomserver.input`: creates rooms, appends local events,
//! upgrades rooms (`upgrade.rs`), takes in PDUs received over
//! federation (`remote.rs`) and countersigns restricted joins
//! (`restricted.rs`).
//!
//! Requests are idempotent under redelivery (DESIGN.md invariant 6): the
//! reply and produced event ids are stored under the request's correlation
//! id in the same transaction as the events, and a redelivered request gets
//! the same reply and its output records again.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Record, Responder};
use myelin_storage::Db;
use ruma::{OwnedEventId, UserId};

use serde::Deserialize;
use serde_json::Value;

use crate::api::{CreateRoom, InputOk, InputReply, InputRequest, NewRoomEvent, SendEvent, StoredEvent};
use crate::error::RequestError;
use crate::events::{Accepted, LocalEvent, Room, Signer, create_room};
use crate::producers::output::{OutputProducer, new_room_event};
use crate::storage::Tx;

mod invite;
mod knock;
mod remote;
mod restricted;
mod upgrade;

pub struct InputConsumer {
    pub db: Db,
    pub bus: Bus,
    pub signer: Arc<Signer>,
    pub default_room_version: String,
    pub output: OutputProducer,
}

/// A handled request: what to answer and what to emit after the commit.
struct Outcome {
    reply: InputOk,
    outputs: Vec<NewRoomEvent>,
}

#[async_trait]
impl Responder for InputConsumer {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let correlation_id = record
            .headers
            .correlation_id
            .clone()
            .ok_or_else(|| HandleError::Poison("input request without correlation id".into()))?;
        let request: InputRequest =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable input request: {e}")))?;
        if let Some((reply, outputs)) = self.replay(&correlation_id).await.map_err(transient)? {
            // The first attempt may have stopped between its commit and its outputs.
            self.output.publish(outputs).await?;
            return Ok(reply);
        }
        let result = match request {
            InputRequest::CreateRoom(create) => self.create_room(&correlation_id, create).await,
            InputRequest::SendEvent(send) => self.send_event(&correlation_id, send).await,
            InputRequest::InputPdus(input) => self.input_pdus(&correlation_id, input).await,
            InputRequest::JoinedRemoteRoom(joined) => self.joined_remote_room(&correlation_id, joined).await,
            InputRequest::Backfill(backfill) => self.backfill(&correlation_id, backfill).await,
            InputRequest::ReceivedInvite(invite) => self.received_invite(&correlation_id, invite).await,
            InputRequest::ReceivedJoin(join) => self.received_join(&correlation_id, join).await,
            InputRequest::KnockedRemoteRoom(knock) => self.knocked_remote_room(&correlation_id, knock).await,
            InputRequest::UpgradeRoom(upgrade) => self.upgrade_room(&correlation_id, upgrade).await,
        };
        match result {
            Ok(Outcome { reply, outputs }) => {
                self.output.publish(outputs).await?;
                Ok(encode(&Ok(reply)))
            }
            Err(error) => {
                let reply = encode(&Err(error.into_reply()?));
                self.remember_failure(&correlation_id, &reply).await.map_err(transient)?;
                Ok(reply)
            }
        }
    }
}

/// What a handled request stored to replay its outputs: local events are
/// rebuilt from their ids; received PDUs store their records whole, since
/// their state deltas depend on the room at the time.
#[derive(Deserialize)]
#[serde(untagged)]
enum Produced {
    EventIds(Vec<String>),
    Outputs(Vec<NewRoomEvent>),
}

fn encode(reply: &InputReply) -> Vec<u8> {
    serde_json::to_vec(reply).expect("replies serialize")
}

fn transient(error: RequestError) -> HandleError {
    HandleError::Transient(error.to_string())
}

impl InputConsumer {
    /// The stored reply of a request seen before, and its output records.
    async fn replay(&self, correlation_id: &str) -> Result<Option<(Vec<u8>, Vec<NewRoomEvent>)>, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let Some((reply, produced)) = tx.request(correlation_id).await? else { return Ok(None) };
        let event_ids = match serde_json::from_str(&produced)? {
            Produced::Outputs(outputs) => return Ok(Some((reply.into_bytes(), outputs))),
            Produced::EventIds(event_ids) => event_ids,
        };
        let mut outputs = Vec::with_capacity(event_ids.len());
        for event_id in event_ids {
            let row =
                tx.event(&event_id).await?.ok_or_else(|| RequestError::Internal(format!("{event_id} vanished")))?;
            let txn = tx.txn_of_event(&event_id).await?;
            let event = StoredEvent {
                event_id: OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?,
                room_id: row
                    .room_id
                    .try_into()
                    .map_err(|e: ruma::IdParseError| RequestError::Internal(e.to_string()))?,
                pdu: serde_json::from_str(&row.pdu)?,
            };
            outputs.push(new_room_event(event, row.state_key.is_some(), row.room_version, txn));
        }
        Ok(Some((reply.into_bytes(), outputs)))
    }

    /// Failed requests are remembered too, so a redelivery answers the same.
    async fn remember_failure(&self, correlation_id: &str, reply: &[u8]) -> Result<(), RequestError> {
        let mut tx = Tx::write(&self.db).await?;
        tx.insert_request(correlation_id, std::str::from_utf8(reply).expect("JSON is UTF-8"), "[]").await?;
        Ok(tx.commit().await?)
    }

    /// An invite whose invitee belongs to another server.
    fn invites_remote_user(&self, request: &SendEvent) -> bool {
        request.event_type == "m.room.member"
            && request.content.get("membership").and_then(serde_json::Value::as_str) == Some("invite")
            && request
                .state_key
                .as_deref()
                .and_then(|key| UserId::parse(key).ok())
                .is_some_and(|invitee| invitee.server_name() != self.signer.server_name)
    }

    fn check_local(&self, user: &UserId) -> Result<(), RequestError> {
        if user.server_name() != self.signer.server_name {
            return Err(RequestError::Forbidden(format!("{user} is not a user of this server")));
        }
        Ok(())
    }

    /// `POST /createRoom`: the create event and everything the request asks
    /// for, in one transaction, so a room is created whole or not at all.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom>
    async fn create_room(&self, correlation_id: &str, request: CreateRoom) -> Result<Outcome, RequestError> {
        self.check_local(&request.creator)?;
        let plan = create_room::plan(&request, &self.default_room_version)?;
        let now = self.bus.clock().now_ms();
        let mut tx = Tx::write(&self.db).await?;
        let (mut room, create) =
            Room::create(&mut tx, &self.signer, plan.version.clone(), &request.creator, &plan.create_content, now)
                .await?;
        let mut accepted = vec![create];
        for event in &plan.events {
            let event = room
                .append(
                    &mut tx,
                    &self.signer,
                    LocalEvent {
                        sender: &request.creator,
                        event_type: &event.event_type,
                        state_key: Some(&event.state_key),
                        content: &event.content,
                    },
                    now,
                )
                .await?;
            accepted.push(event);
        }
        let reply = InputOk::RoomCreated { room_id: room.room_id.clone() };
        let outputs =
            accepted.into_iter().map(|a| new_room_event(a.event, a.is_state, plan.version.to_string(), None)).collect();
        commit_reply(tx, correlation_id, reply, outputs).await
    }

    /// `PUT /rooms/{roomId}/send|state/…` and membership changes: one local
    /// event. A repeated client transaction returns the first event id.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#transaction-identifiers>
    async fn send_event(&self, correlation_id: &str, request: SendEvent) -> Result<Outcome, RequestError> {
        self.check_local(&request.sender)?;
        if self.invites_remote_user(&request) {
            return self.invite_remote(correlation_id, request).await;
        }
        if let Some(outcome) = self.leave_remote(correlation_id, &request).await? {
            return Ok(outcome);
        }
        let mut tx = Tx::write(&self.db).await?;
        if let Some(txn) = &request.txn
            && let Some(event_id) = tx.txn_event(request.sender.as_str(), txn).await?
        {
            let event_id = OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?;
            let reply = InputOk::EventSent { event_id };
            tx.insert_request(correlation_id, &serde_json::to_string(&InputReply::Ok(reply.clone()))?, "[]").await?;
            tx.commit().await?;
            return Ok(Outcome { reply, outputs: Vec::new() });
        }
        let Some(mut room) = Room::load(&mut tx, &request.room_id).await? else {
            let message = format!("unknown room {}", request.room_id);
            return Err(if request.event_type == "m.room.member" {
                RequestError::NotFound(message)
            } else {
                RequestError::Forbidden(message)
            });
        };
        let joins = request.event_type == "m.room.member"
            && request.content.get("membership").and_then(Value::as_str) == Some("join");
        if request.sender_is_guest && joins {
            room.check_guest_join(&mut tx).await?;
        }
        let authorised = if joins { self.authorised_join(&mut tx, &mut room, &request).await? } else { None };
        let now = request.origin_server_ts.unwrap_or_else(|| self.bus.clock().now_ms());
        let accepted = room
            .append(
                &mut tx,
                &self.signer,
                LocalEvent {
                    sender: &request.sender,
                    event_type: &request.event_type,
                    state_key: request.state_key.as_deref(),
                    content: authorised.as_ref().unwrap_or(&request.content),
                },
                now,
            )
            .await?;
        commit_sent(tx, correlation_id, request, accepted, room.version.to_string()).await
    }
}

impl InputConsumer {
    /// A local user's own join of a restricted room: its content naming
    /// the user of this server who authorises it, `None` when the join
    /// needs no authorisation. Whatever keeps the user out is `M_FORBIDDEN`
    /// to them.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#restricted-rooms>
    async fn authorised_join(
        &self,
        tx: &mut Tx,
        room: &mut Room,
        request: &SendEvent,
    ) -> Result<Option<Value>, RequestError> {
        if request.state_key.as_deref() != Some(request.sender.as_str()) {
            return Ok(None);
        }
        let via = match room.join_authoriser(tx, &request.sender, &self.signer.server_name).await {
            Ok(via) => via,
            Err(RequestError::UnableToAuthoriseJoin(m) | RequestError::UnableToGrantJoin(m)) => {
                return Err(RequestError::Forbidden(m));
            }
            Err(other) => return Err(other),
        };
        let Some(via) = via else { return Ok(None) };
        let mut content = request.content.clone();
        let fields = content.as_object_mut().ok_or_else(|| RequestError::BadJson("content is not an object".into()))?;
        fields.insert("join_authorised_via_users_server".to_owned(), Value::String(via.to_string()));
        Ok(Some(content))
    }
}

/// Record a local event that entered its room: the client's transaction id
/// and the request's reply (the event id), then commit. The event is the
/// output.
async fn commit_sent(
    mut tx: Tx,
    correlation_id: &str,
    request: SendEvent,
    accepted: Accepted,
    room_version: String,
) -> Result<Outcome, RequestError> {
    let event_id = accepted.event.event_id.clone();
    if let Some(txn) = &request.txn {
        tx.insert_txn(request.sender.as_str(), txn, event_id.as_str()).await?;
    }
    let reply = InputOk::EventSent { event_id };
    let output = new_room_event(accepted.event, accepted.is_state, room_version, request.txn);
    commit_reply(tx, correlation_id, reply, vec![output]).await
}

/// Record the request's reply and the events it produced (so that a
/// redelivery replays them), commit, and hand the events on as output.
async fn commit_reply(
    mut tx: Tx,
    correlation_id: &str,
    reply: InputOk,
    outputs: Vec<NewRoomEvent>,
) -> Result<Outcome, RequestError> {
    let event_ids: Vec<&OwnedEventId> = outputs.iter().map(|output| &output.event.event_id).collect();
    tx.insert_request(
        correlation_id,
        &serde_json::to_string(&InputReply::Ok(reply.clone()))?,
        &serde_json::to_string(&event_ids)?,
    )
    .await?;
    tx.commit().await?;
    Ok(Outcome { reply, outputs })
}
