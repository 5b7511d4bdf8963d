//! Answers `clientapi.publicrooms`: a page of this server's public room
//! directory, so that the federation API serves `/publicRooms` without
//! reading our tables.

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;

use crate::api::{PublicRoomsQuery, PublicRoomsReply};
use crate::error::ClientApiError;
use crate::routing::directory::{Page, page_of};
use crate::storage::directory::DirectoryFilter;

pub const GROUP: &str = "clientapi.publicrooms";

pub struct PublicRoomsResponder {
    pub db: Db,
}

#[async_trait]
impl Responder for PublicRoomsResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let query: PublicRoomsQuery =
            request.json().map_err(|e| HandleError::Poison(format!("bad public rooms query: {e}")))?;
        // Another server's `limit` of 0 means "no limit": the largest page.
        let limit = query.limit.filter(|limit| *limit != 0);
        let filter = DirectoryFilter { search: query.search, room_types: query.room_types };
        let reply: PublicRoomsReply = match Page::new(limit, query.since.as_deref(), filter) {
            Ok(page) => match page_of(&self.db, page).await {
                Ok(body) => Ok(body),
                Err(ClientApiError::Matrix(error)) => Err(error),
                Err(error) => return Err(HandleError::Transient(error.to_string())),
            },
            Err(error) => Err(error),
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
