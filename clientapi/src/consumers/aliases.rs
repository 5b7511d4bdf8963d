//! Answers `clientapi.aliases`: the room a local alias names, so that the
//! federation API serves `/query/directory` without reading our tables.

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;
use myelin_types::ruma::OwnedRoomId;

use crate::api::{AliasQuery, AliasReply};
use crate::storage::directory;

pub const GROUP: &str = "clientapi.aliases";

pub struct AliasResponder {
    pub db: Db,
}

#[async_trait]
impl Responder for AliasResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let AliasQuery { alias } = request.json().map_err(|e| HandleError::Poison(format!("bad alias query: {e}")))?;
        let found = directory::alias(&self.db, &alias).await.map_err(|e| HandleError::Transient(e.to_string()))?;
        let reply: AliasReply = found.and_then(|(room_id, _)| OwnedRoomId::try_from(room_id).ok());
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
