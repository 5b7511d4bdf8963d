//! Answers `clientapi.query`: which user and device own a token hash (or
//! whom an application service asserts), so other components authenticate
//! requests without reading our tables.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;

use crate::api::{QueryReply, QueryRequest};
use crate::appservice::{AppServices, Assertion, identify};
use crate::error::ClientApiError;

pub struct QueryResponder {
    pub db: Db,
    pub app_services: Arc<AppServices>,
}

#[async_trait]
impl Responder for QueryResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let request: QueryRequest = request.json().map_err(|e| HandleError::Poison(format!("bad query: {e}")))?;
        let reply: QueryReply = match request {
            QueryRequest::Whoami { token_hash, user_id, device_id } => {
                let assertion = Assertion { user_id, device_id };
                match identify(&self.db, &self.app_services, &token_hash, &assertion).await {
                    Ok(identity) => Ok(identity),
                    Err(ClientApiError::Matrix(error)) => Err(error),
                    Err(other) => return Err(HandleError::Transient(other.to_string())),
                }
            }
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
