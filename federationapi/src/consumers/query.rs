//! Answers `federationapi.query`: the room server's questions about other
//! servers (their keys, events it lacks).

use std::sync::Arc;

use async_trait::async_trait;
use axum::http::StatusCode;
use myelin_bus::{HandleError, Record, Responder};
use myelin_roomserver::api::{FederationQuery, FederationQueryOk, FederationQueryReply};
use myelin_types::ruma::{OwnedEventId, UserId};
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Value, json};

use super::encode;
use super::perform::PerformResponder;
use crate::client::{ClientError, FederationClient, FederationRequest};
use crate::keys::KeyStore;

pub const GROUP: &str = "federationapi.query";

pub struct QueryResponder {
    pub keys: Arc<KeyStore>,
    pub client: Arc<FederationClient>,
    /// Builds and signs leave events like it does joins.
    pub perform: Arc<PerformResponder>,
}

#[async_trait]
impl Responder for QueryResponder {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let query: FederationQuery =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable federation query: {e}")))?;
        let reply: FederationQueryReply = self.answer(query).await;
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(format!("unencodable reply: {e}")))
    }
}

impl QueryResponder {
    async fn answer(&self, query: FederationQuery) -> FederationQueryReply {
        match query {
            FederationQuery::ServerKeys { server_name, key_ids } => {
                let keys = self.keys.server_keys(server_name.as_str(), &key_ids).await?;
                Ok(FederationQueryOk::ServerKeys { keys })
            }
            FederationQuery::Events { room_id: _, servers, event_ids } => {
                let mut pdus = Vec::new();
                for event_id in event_ids {
                    let path = format!("/_matrix/federation/v1/event/{}", encode(event_id.as_str()));
                    if let Some(answer) =
                        self.first_answer(&servers, |server| FederationRequest::get(server, path.clone())).await
                    {
                        pdus.extend(answer.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default());
                    }
                }
                Ok(FederationQueryOk::Pdus { pdus })
            }
            FederationQuery::Backfill { room_id, servers, from, limit } => {
                let mut path = format!("/_matrix/federation/v1/backfill/{}?limit={limit}", encode(room_id.as_str()));
                for event_id in &from {
                    path.push_str(&format!("&v={}", encode(event_id.as_str())));
                }
                let answer = self
                    .first_answer(&servers, |server| FederationRequest::get(server, path.clone()))
                    .await
                    .ok_or_else(|| MatrixError::not_found("No server returned history to backfill"))?;
                let pdus = answer.get("pdus").and_then(Value::as_array).cloned().unwrap_or_default();
                Ok(FederationQueryOk::Pdus { pdus })
            }
            FederationQuery::StateIds { room_id, servers, event_id } => {
                let path = format!(
                    "/_matrix/federation/v1/state_ids/{}?event_id={}",
                    encode(room_id.as_str()),
                    encode(event_id.as_str())
                );
                let answer = self
                    .first_answer(&servers, |server| FederationRequest::get(server, path.clone()))
                    .await
                    .ok_or_else(|| MatrixError::not_found("No server returned the state at the event"))?;
                // Ids that do not parse are left out; the room server checks the rest.
                let ids = |key: &str| {
                    let ids = answer.get(key).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                    ids.iter().filter_map(|id| OwnedEventId::try_from(id.as_str()?).ok()).collect()
                };
                Ok(FederationQueryOk::StateIds { pdu_ids: ids("pdu_ids"), auth_chain_ids: ids("auth_chain_ids") })
            }
            FederationQuery::Leave { room_id, user_id, servers } => {
                self.perform.leave(&room_id, &user_id, &servers).await
            }
            FederationQuery::Invite { room_id, event_id, room_version, event, invite_room_state } => {
                let invitee = event.get("state_key").and_then(Value::as_str).and_then(|id| UserId::parse(id).ok());
                let invitee = invitee.ok_or_else(|| MatrixError::bad_json("The invite has no invitee"))?;
                let path =
                    format!("/_matrix/federation/v2/invite/{}/{}", encode(room_id.as_str()), encode(event_id.as_str()));
                let body = json!({
                    "room_version": room_version,
                    "event": event,
                    "invite_room_state": invite_room_state,
                });
                let server = invitee.server_name().as_str();
                match self.client.send(FederationRequest::put(server, path, body)).await {
                    Ok(answer) => {
                        let event = answer.get("event").cloned().ok_or_else(|| {
                            MatrixError::new(
                                ErrorCode::Unknown,
                                format!("{server} answered the invite without an event"),
                            )
                        })?;
                        Ok(FederationQueryOk::Pdus { pdus: vec![event] })
                    }
                    // The invitee's server refused: its error goes to the inviter.
                    Err(ClientError::Status { body, .. }) => {
                        let errcode = serde_json::from_value(body["errcode"].clone()).unwrap_or(ErrorCode::Forbidden);
                        let error = body["error"].as_str().unwrap_or("the invite was refused");
                        Err(MatrixError::new(errcode, format!("{server}: {error}")).with_status(StatusCode::FORBIDDEN))
                    }
                    Err(error) => {
                        tracing::info!(%error, server, "invite not delivered");
                        Err(MatrixError::new(ErrorCode::Unknown, format!("{server} could not be reached: {error}"))
                            .with_status(StatusCode::BAD_GATEWAY))
                    }
                }
            }
            FederationQuery::MissingEvents { room_id, servers, earliest, latest, limit } => {
                let path = format!("/_matrix/federation/v1/get_missing_events/{}", encode(room_id.as_str()));
                let body = json!({ "earliest_events": earliest, "latest_events": latest, "limit": limit });
                let answer = self
                    .first_answer(&servers, |server| FederationRequest::post(server, path.clone(), body.clone()))
                    .await
                    .ok_or_else(|| MatrixError::not_found("No server returned the missing events"))?;
                let pdus = answer.get("events").and_then(Value::as_array).cloned().unwrap_or_default();
                Ok(FederationQueryOk::Pdus { pdus })
            }
        }
    }

    /// Ask each server in turn; the first successful answer wins. The
    /// room server validates what comes back, so nothing is trusted here.
    async fn first_answer(
        &self,
        servers: &[myelin_types::ruma::OwnedServerName],
        request: impl Fn(&str) -> FederationRequest,
    ) -> Option<Value> {
        for server in servers {
            match self.client.send(request(server.as_str())).await {
                Ok(answer) => return Some(answer),
                Err(error @ (ClientError::Status { .. } | ClientError::NotJson { .. })) => {
                    tracing::debug!(%error, "server could not answer")
                }
                Err(error) => tracing::info!(%error, "server unreachable"),
            }
        }
        None
    }
}
