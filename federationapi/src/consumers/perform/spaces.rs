//! Reads of other servers' rooms the client API asks for: a space's
//! hierarchy (`/hierarchy`) and a public room directory (`/publicRooms`).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#spaces>,
//! <https://spec.matrix.org/v1.16/server-server-api/#public-room-directory>

use http::StatusCode;
use myelin_roomserver::api::{FederationPerformOk, FederationPerformReply};
use myelin_types::ruma::{OwnedRoomId, OwnedServerName};
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Map, Value, json};

use super::PerformResponder;
use crate::client::{ClientError, FederationRequest};
use crate::consumers::encode;

impl PerformResponder {
    /// `/hierarchy` of the room through each of `servers` until one answers.
    pub(super) async fn hierarchy(
        &self,
        room_id: &OwnedRoomId,
        servers: &[OwnedServerName],
        suggested_only: bool,
    ) -> FederationPerformReply {
        let path =
            format!("/_matrix/federation/v1/hierarchy/{}?suggested_only={suggested_only}", encode(room_id.as_str()));
        let mut last = None;
        for server in servers.iter().filter(|server| **server != self.server_name) {
            match self.client.send(FederationRequest::get(server.as_str(), path.clone())).await {
                Ok(response) => return Ok(FederationPerformOk::Remote { response }),
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "hierarchy request failed");
                    last = Some(error);
                }
            }
        }
        Err(last.map_or_else(|| MatrixError::not_found(format!("No server to ask about {room_id}")), remote_error))
    }

    /// `/publicRooms` of `server`: `GET`, or `POST` to pass a filter.
    pub(super) async fn public_rooms(
        &self,
        server: &OwnedServerName,
        limit: Option<i64>,
        since: Option<String>,
        filter: Option<Value>,
    ) -> FederationPerformReply {
        const PATH: &str = "/_matrix/federation/v1/publicRooms";
        let request = match filter {
            Some(filter) => {
                let mut body = Map::new();
                body.insert("filter".to_owned(), filter);
                if let Some(limit) = limit {
                    body.insert("limit".to_owned(), json!(limit));
                }
                if let Some(since) = since {
                    body.insert("since".to_owned(), json!(since));
                }
                FederationRequest::post(server.as_str(), PATH, Value::Object(body))
            }
            None => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                if let Some(limit) = limit {
                    query.append_pair("limit", &limit.to_string());
                }
                if let Some(since) = since {
                    query.append_pair("since", &since);
                }
                FederationRequest::get(server.as_str(), format!("{PATH}?{}", query.finish()))
            }
        };
        match self.client.send(request).await {
            Ok(response) => Ok(FederationPerformOk::Remote { response }),
            Err(error) => {
                tracing::info!(%server, %error, "public rooms request failed");
                Err(remote_error(error))
            }
        }
    }
}

/// The other server's refusal as it worded it (its status when it is a
/// client error); a server that could not be reached or answered badly is
/// `502 M_UNKNOWN`.
fn remote_error(error: ClientError) -> MatrixError {
    if let ClientError::Status { status: status @ 400..=499, body, .. } = &error {
        let code = body["errcode"].as_str().and_then(|c| serde_json::from_value(json!(c)).ok());
        let message = body["error"].as_str().unwrap_or("The other server refused").to_owned();
        let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
        return MatrixError::new(code.unwrap_or(ErrorCode::Unknown), message).with_status(status);
    }
    MatrixError::new(ErrorCode::Unknown, error.to_string()).with_status(StatusCode::BAD_GATEWAY)
}
