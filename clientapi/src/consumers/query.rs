//! Answers `clientapi.query`: which user and device own a token hash, so
//! other components authenticate requests without reading our tables.

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;
use myelin_types::ruma::OwnedUserId;

use crate::api::{Identity, QueryReply, QueryRequest};
use crate::storage::tokens;

pub struct QueryResponder {
    pub db: Db,
}

#[async_trait]
impl Responder for QueryResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let request: QueryRequest = request.json().map_err(|e| HandleError::Poison(format!("bad query: {e}")))?;
        let reply: QueryReply = match request {
            QueryRequest::Whoami { token_hash } => {
                let found =
                    tokens::lookup(&self.db, &token_hash).await.map_err(|e| HandleError::Transient(e.to_string()))?;
                found.and_then(|owner| {
                    OwnedUserId::try_from(owner.user_id).ok().map(|user_id| Identity {
                        user_id,
                        device_id: owner.device_id,
                        is_guest: owner.is_guest,
                        is_admin: owner.is_admin,
                        expires_ms: owner.expires_ms.map(|ms| u64::try_from(ms).unwrap_or(0)),
                    })
                })
            }
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
