//! Answers `roomserver.query`: read-only questions about rooms.

mod acl;
mod server_read;
mod space;

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;
use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, UserId};
use serde_json::json;

use crate::api::{CurrentMembership, QueryOk, QueryReply, QueryRequest, StoredEvent};
use crate::error::RequestError;
use crate::events::Room;
use crate::events::chain::auth_chain;
use crate::events::pdu::Pdu;
use crate::events::stripped::stripped_state;
use crate::storage::{EventStatus, StateMap, Tx, resolve_snapshot};

pub struct QueryConsumer {
    pub db: Db,
    /// This server: whose users may authorise restricted joins.
    pub server_name: OwnedServerName,
}

#[async_trait]
impl Responder for QueryConsumer {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let request: QueryRequest =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable query: {e}")))?;
        let result = match request {
            QueryRequest::RoomState { room_id, requester, event_type, state_key } => {
                self.room_state(&room_id, &requester, event_type.as_deref(), state_key.as_deref()).await
            }
            QueryRequest::JoinedRooms { user_id } => {
                self.rooms_with_membership(&user_id, "join").await.map(|room_ids| QueryOk::JoinedRooms { room_ids })
            }
            QueryRequest::InvitedRooms { user_id } => {
                self.rooms_with_membership(&user_id, "invite").await.map(|room_ids| QueryOk::InvitedRooms { room_ids })
            }
            QueryRequest::Membership { room_id, user_id } => self.membership(&room_id, &user_id).await,
            QueryRequest::RoomVersion { room_id } => self.room_version(&room_id).await,
            QueryRequest::MakeJoin { room_id, user_id, supported_versions } => {
                self.make_join(&room_id, &user_id, &supported_versions).await
            }
            QueryRequest::StateAndAuthChain { room_id, event_id } => {
                self.state_and_auth_chain(&room_id, &event_id).await
            }
            QueryRequest::MakeLeave { room_id, user_id } => self.make_leave(&room_id, &user_id).await,
            QueryRequest::MakeKnock { room_id, user_id, supported_versions } => {
                self.make_knock(&room_id, &user_id, &supported_versions).await
            }
            QueryRequest::StrippedState { room_id } => self.stripped_state(&room_id).await,
            QueryRequest::ServerRead { server, read } => server_read::answer(&self.db, &server, read).await,
            QueryRequest::ServerAllowed { room_id, server } => acl::answer(&self.db, &room_id, &server).await,
            QueryRequest::TimestampToEvent { room_id, ts, forward, reader } => {
                server_read::timestamp_to_event(&self.db, &reader, &room_id, ts, forward).await
            }
            QueryRequest::UserEvent { user_id, room_id, event_id } => {
                server_read::user_event(&self.db, &user_id, &room_id, &event_id).await
            }
            QueryRequest::SpaceRoom { room_id, reader } => space::answer(&self.db, &room_id, &reader).await,
        };
        let reply: QueryReply = match result {
            Ok(ok) => Ok(ok),
            Err(error) => Err(error.into_reply()?),
        };
        Ok(serde_json::to_vec(&reply).expect("replies serialize"))
    }
}

impl QueryConsumer {
    /// The room state a user may see: current state while joined, the state
    /// at their leave (or ban) event after that, nothing otherwise.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidstate>
    async fn room_state(
        &self,
        room_id: &RoomId,
        requester: &UserId,
        event_type: Option<&str>,
        state_key: Option<&str>,
    ) -> Result<QueryOk, RequestError> {
        let forbidden = || RequestError::Forbidden(format!("{requester} is not in room {room_id}"));
        let mut tx = Tx::read(&self.db).await?;
        let state: StateMap = match tx.membership(room_id.as_str(), requester.as_str()).await? {
            Some((membership, _)) if membership == "join" => tx
                .current_state(room_id.as_str())
                .await?
                .into_iter()
                .map(|(kind, key, event_id)| ((kind, key), event_id))
                .collect(),
            Some((membership, event_id)) if membership == "leave" || membership == "ban" => {
                let row =
                    tx.event(&event_id).await?.ok_or_else(|| RequestError::Internal(format!("{event_id} missing")))?;
                let mut state = resolve_snapshot(&mut tx, row.state_before).await?;
                state.insert(("m.room.member".to_owned(), requester.to_string()), event_id);
                state
            }
            _ => return Err(forbidden()),
        };
        let wanted = state.into_iter().filter(|((kind, key), _)| {
            event_type.is_none_or(|wanted| wanted == kind) && state_key.is_none_or(|wanted| wanted == key)
        });
        let mut events = Vec::new();
        for (_, event_id) in wanted {
            let pdu =
                tx.event_pdu(&event_id).await?.ok_or_else(|| RequestError::Internal(format!("{event_id} missing")))?;
            events.push(StoredEvent {
                event_id: OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?,
                room_id: room_id.to_owned(),
                pdu: serde_json::from_str(&pdu)?,
            });
        }
        if events.is_empty() && event_type.is_some() && state_key.is_some() {
            return Err(RequestError::NotFound("state event not found".into()));
        }
        Ok(QueryOk::State { events })
    }

    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3joined_rooms>
    async fn rooms_with_membership(
        &self,
        user_id: &UserId,
        membership: &str,
    ) -> Result<Vec<OwnedRoomId>, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        tx.rooms_with_membership(user_id.as_str(), membership)
            .await?
            .into_iter()
            .map(|id| OwnedRoomId::try_from(id).map_err(|e| RequestError::Internal(e.to_string())))
            .collect()
    }
}

impl QueryConsumer {
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidforget>
    async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let current = match tx.membership(room_id.as_str(), user_id.as_str()).await? {
            Some((membership, event_id)) => {
                let event_id = OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?;
                let pdu = tx
                    .event_pdu(event_id.as_str())
                    .await?
                    .ok_or_else(|| RequestError::Internal(format!("membership event {event_id} missing")))?;
                let sender = Pdu::parse(event_id.clone(), &pdu)?.sender;
                Some(CurrentMembership { membership, event_id, sender })
            }
            None => None,
        };
        Ok(QueryOk::Membership { current })
    }

    async fn room_version(&self, room_id: &RoomId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let row = tx.room(room_id.as_str()).await?.ok_or_else(|| unknown_room(room_id))?;
        Ok(QueryOk::RoomVersion { room_version: row.version })
    }

    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_joinroomiduserid>
    async fn make_join(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        supported_versions: &[String],
    ) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let mut room = Room::load(&mut tx, room_id).await?.ok_or_else(|| unknown_room(room_id))?;
        let room_version = room.version.to_string();
        if !supported_versions.contains(&room_version) {
            return Err(RequestError::IncompatibleRoomVersion(room_version));
        }
        let mut content = json!({"membership": "join"});
        if let Some(via) = room.join_authoriser(&mut tx, user_id, &self.server_name).await? {
            content["join_authorised_via_users_server"] = json!(via);
        }
        let event = room.membership_template(&mut tx, user_id, content).await?;
        Ok(QueryOk::JoinTemplate { room_version, event })
    }

    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_leaveroomiduserid>
    async fn make_leave(&self, room_id: &RoomId, user_id: &UserId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let mut room = Room::load(&mut tx, room_id).await?.ok_or_else(|| unknown_room(room_id))?;
        let room_version = room.version.to_string();
        let event = room.membership_template(&mut tx, user_id, json!({"membership": "leave"})).await?;
        Ok(QueryOk::JoinTemplate { room_version, event })
    }

    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_knockroomiduserid>
    async fn make_knock(
        &self,
        room_id: &RoomId,
        user_id: &UserId,
        supported_versions: &[String],
    ) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let mut room = Room::load(&mut tx, room_id).await?.ok_or_else(|| unknown_room(room_id))?;
        let room_version = room.version.to_string();
        let knocking = room.version.rules().is_some_and(|rules| rules.authorization.knocking);
        if !knocking || !supported_versions.contains(&room_version) {
            return Err(RequestError::IncompatibleRoomVersion(room_version));
        }
        let event = room.membership_template(&mut tx, user_id, json!({"membership": "knock"})).await?;
        Ok(QueryOk::JoinTemplate { room_version, event })
    }

    async fn stripped_state(&self, room_id: &RoomId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        tx.room(room_id.as_str()).await?.ok_or_else(|| unknown_room(room_id))?;
        Ok(QueryOk::StrippedState { events: stripped_state(&mut tx, room_id.as_str(), None).await? })
    }

    /// The state before an event and the auth chain of that state and the
    /// event. Only events in the room's graph with a known state qualify.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_joinroomideventid>
    async fn state_and_auth_chain(&self, room_id: &RoomId, event_id: &EventId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let not_found = || RequestError::NotFound(format!("no event {event_id} with known state in {room_id}"));
        let row = tx.event(event_id.as_str()).await?.ok_or_else(not_found)?;
        if row.room_id != room_id.as_str() {
            return Err(not_found());
        }
        let known = tx.known_event(event_id.as_str()).await?.ok_or_else(not_found)?;
        if matches!(known.status, EventStatus::Outlier) {
            return Err(not_found());
        }
        let mut roots = vec![Pdu::parse(event_id.to_owned(), &row.pdu)?];
        let mut state = Vec::new();
        for (_, id) in resolve_snapshot(&mut tx, row.state_before).await? {
            let json = tx.event_pdu(&id).await?.ok_or_else(|| RequestError::Internal(format!("{id} missing")))?;
            let id = OwnedEventId::try_from(id).map_err(|e| RequestError::Internal(e.to_string()))?;
            roots.push(Pdu::parse(id, &json)?);
            state.push(serde_json::from_str(&json)?);
        }
        let auth_chain = auth_chain(&mut tx, &roots).await?.into_iter().map(|(_, pdu)| pdu).collect();
        Ok(QueryOk::StateAndAuthChain { state, auth_chain })
    }
}

fn unknown_room(room_id: &RoomId) -> RequestError {
    RequestError::NotFound(format!("unknown room {room_id}"))
}
