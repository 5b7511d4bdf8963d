//! Answers `roomserver.query`: read-only questions about rooms.

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;
use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId};

use crate::api::{QueryOk, QueryReply, QueryRequest, StoredEvent};
use crate::error::RequestError;
use crate::storage::{StateMap, Tx, resolve_snapshot};

pub struct QueryConsumer {
    pub db: Db,
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
            QueryRequest::JoinedRooms { user_id } => self.joined_rooms(&user_id).await,
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
    async fn joined_rooms(&self, user_id: &UserId) -> Result<QueryOk, RequestError> {
        let mut tx = Tx::read(&self.db).await?;
        let room_ids = tx
            .joined_rooms(user_id.as_str())
            .await?
            .into_iter()
            .map(|id| OwnedRoomId::try_from(id).map_err(|e| RequestError::Internal(e.to_string())))
            .collect::<Result<_, _>>()?;
        Ok(QueryOk::JoinedRooms { room_ids })
    }
}
