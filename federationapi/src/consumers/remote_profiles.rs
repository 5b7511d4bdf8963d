//! Answers `federationapi.profiles`: another server's user's profile for
//! the client API's `/profile` (`/query/profile` on the user's server).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1queryprofile>

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_clientapi::api::{PublicProfile, RemoteProfileQuery, RemoteProfileReply};
use myelin_types::MatrixError;
use myelin_types::ruma::UserId;
use serde_json::Value;

use super::encode;
use crate::client::{ClientError, FederationClient, FederationRequest};

pub const GROUP: &str = "federationapi.profiles";

pub struct RemoteProfileResponder {
    pub client: Arc<FederationClient>,
}

#[async_trait]
impl Responder for RemoteProfileResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let RemoteProfileQuery { user_id } =
            request.json().map_err(|e| HandleError::Poison(format!("bad remote profile query: {e}")))?;
        let reply: RemoteProfileReply = self.profile(&user_id).await;
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}

impl RemoteProfileResponder {
    async fn profile(&self, user_id: &UserId) -> RemoteProfileReply {
        let path = format!("/_matrix/federation/v1/query/profile?user_id={}", encode(user_id.as_str()));
        match self.client.send(FederationRequest::get(user_id.server_name().as_str(), path)).await {
            Ok(answer) => {
                let field = |name: &str| answer.get(name).and_then(Value::as_str).map(str::to_owned);
                let fields = match &answer {
                    Value::Object(all) => all
                        .iter()
                        .filter(|(name, _)| !matches!(name.as_str(), "displayname" | "avatar_url"))
                        .map(|(name, value)| (name.clone(), value.clone()))
                        .collect(),
                    _ => Default::default(),
                };
                Ok(PublicProfile { displayname: field("displayname"), avatar_url: field("avatar_url"), fields })
            }
            Err(ClientError::Status { status: 404, .. }) => Err(MatrixError::not_found("Profile not found")),
            // The spec's answers for a profile are the profile or 404; a
            // server that cannot be asked has no profile to show either.
            Err(error) => {
                tracing::info!(%user_id, %error, "profile query failed");
                Err(MatrixError::not_found(format!("Cannot reach the user's server: {error}")))
            }
        }
    }
}
