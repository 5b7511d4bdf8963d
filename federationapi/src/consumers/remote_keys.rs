//! Answers `federationapi.keys`: other servers' users' keys for the client
//! API's `/keys/query` and `/keys/claim` (`/user/keys/query`,
//! `/user/keys/claim` on the users' server), within the client's timeout.
//! The answer goes back unchecked; the client API keeps only what it asked.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#end-to-end-encryption>

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_clientapi::api::{RemoteKeysReply, RemoteKeysRequest};

use crate::client::{FederationClient, FederationRequest};

pub const GROUP: &str = "federationapi.keys";

pub struct RemoteKeysResponder {
    pub client: Arc<FederationClient>,
}

#[async_trait]
impl Responder for RemoteKeysResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let request: RemoteKeysRequest =
            request.json().map_err(|e| HandleError::Poison(format!("bad remote keys request: {e}")))?;
        let (server_name, path, body, timeout_ms) = match request {
            RemoteKeysRequest::Query { server_name, body, timeout_ms } => {
                (server_name, "/_matrix/federation/v1/user/keys/query", body, timeout_ms)
            }
            RemoteKeysRequest::Claim { server_name, body, timeout_ms } => {
                (server_name, "/_matrix/federation/v1/user/keys/claim", body, timeout_ms)
            }
        };
        let send = self.client.send(FederationRequest::post(&server_name, path, body));
        let reply: RemoteKeysReply = match tokio::time::timeout(Duration::from_millis(timeout_ms), send).await {
            Ok(Ok(answer)) if answer.is_object() => Ok(answer),
            Ok(Ok(_)) => Err(format!("{server_name} answered something other than an object")),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("{server_name} did not answer in time")),
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
