//! Answers `clientapi.aliases`: the room a local alias names, so that the
//! federation API serves `/query/directory` without reading our tables. A
//! missing alias is first asked of the application services whose
//! namespace holds it, as for this server's own clients.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;
use myelin_types::ruma::OwnedRoomId;

use crate::api::{AliasQuery, AliasReply};
use crate::appservice::AppServices;
use crate::storage::directory;

pub const GROUP: &str = "clientapi.aliases";

pub struct AliasResponder {
    pub db: Db,
    pub app_services: Arc<AppServices>,
}

#[async_trait]
impl Responder for AliasResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let AliasQuery { alias } = request.json().map_err(|e| HandleError::Poison(format!("bad alias query: {e}")))?;
        let transient = |e: myelin_storage::sqlx::Error| HandleError::Transient(e.to_string());
        let mut found = directory::alias(&self.db, &alias).await.map_err(transient)?;
        if found.is_none() && self.app_services.query_alias(&alias).await {
            found = directory::alias(&self.db, &alias).await.map_err(transient)?;
        }
        let reply: AliasReply = found.and_then(|(room_id, _)| OwnedRoomId::try_from(room_id).ok());
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
