//! Answers `federationapi.perform`: what the client API asks the federation
//! API to do for local users: join a room through another server, resolve
//! another server's alias, read another server's spaces and directory
//! (`perform/spaces.rs`).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#joining-rooms>

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Record, Responder};
use myelin_roomserver::api::{
    FederationPerform, FederationPerformOk, FederationPerformReply, FederationQueryOk, FederationQueryReply,
    INPUT_TOPIC, InputOk, InputReply, InputRequest, JoinedRemoteRoom, KnockedRemoteRoom, PERFORM_TIMEOUT,
};
use myelin_types::clock::SharedClock;
use myelin_types::random::alphanumeric;
use myelin_types::ruma::room_version_rules::RoomVersionRules;
use myelin_types::ruma::signatures::{hash_and_sign_event, reference_hash};
use myelin_types::ruma::{
    CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId,
    RoomId, RoomVersionId, UserId,
};
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Map, Value, json};

use super::encode;
use crate::client::{ClientError, FederationClient, FederationRequest};

mod spaces;

pub const GROUP: &str = "federationapi.perform";

/// Room versions this server can join (the room server validates all of them).
pub(crate) const JOINABLE_VERSIONS: &[&str] = &["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"];

/// Why a join through one server failed; the next server is tried.
#[derive(Debug, thiserror::Error)]
enum JoinError {
    #[error(transparent)]
    Remote(#[from] ClientError),
    #[error("{server} offered an unusable join template: {reason}")]
    BadTemplate { server: String, reason: String },
    #[error("{server} answered send_join with something unusable: {reason}")]
    BadResponse { server: String, reason: String },
    #[error("signing the join event: {0}")]
    Sign(String),
}

pub struct PerformResponder {
    pub client: Arc<FederationClient>,
    pub bus: Bus,
    pub clock: SharedClock,
    pub server_name: OwnedServerName,
    pub signing_key: Arc<ServerSigningKey>,
}

#[async_trait]
impl Responder for PerformResponder {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let request: FederationPerform =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable perform request: {e}")))?;
        let reply: FederationPerformReply = match request {
            FederationPerform::JoinRoom { room_id, user_id, servers, content } => {
                self.join(room_id, user_id, servers, content).await
            }
            FederationPerform::ResolveAlias { alias } => self.resolve_alias(&alias).await,
            FederationPerform::KnockRoom { room_id, user_id, servers, content } => {
                self.knock(room_id, user_id, servers, content).await
            }
            FederationPerform::Hierarchy { room_id, servers, suggested_only } => {
                self.hierarchy(&room_id, &servers, suggested_only).await
            }
            FederationPerform::PublicRooms { server, limit, since, filter } => {
                self.public_rooms(&server, limit, since, filter).await
            }
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(format!("unencodable reply: {e}")))
    }
}

/// A join event this server built and signed.
struct SignedJoin {
    room_version: RoomVersionId,
    event_id: OwnedEventId,
    event: CanonicalJsonObject,
}

impl PerformResponder {
    /// Ask `server` for a membership template (`make`: `make_join` or
    /// `make_knock`, offering `versions`) and sign the event built from it.
    async fn make_and_sign(
        &self,
        make: &str,
        versions: &[&str],
        server: &OwnedServerName,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        content: &Value,
    ) -> Result<SignedJoin, JoinError> {
        let versions: Vec<String> = versions.iter().map(|v| format!("ver={v}")).collect();
        let path = format!(
            "/_matrix/federation/v1/{make}/{}/{}?{}",
            encode(room_id.as_str()),
            encode(user_id.as_str()),
            versions.join("&")
        );
        let template = self.client.send(FederationRequest::get(server.as_str(), path)).await?;
        self.sign_membership(server, room_id, user_id, content, &template)
    }

    /// The servers to ask, in order and without this one, for a local
    /// user's membership of kind `membership`.
    fn candidates(
        &self,
        user_id: &OwnedUserId,
        content: &Value,
        membership: &str,
        servers: Vec<OwnedServerName>,
    ) -> Result<Vec<OwnedServerName>, MatrixError> {
        if user_id.server_name().as_str() != self.server_name.as_str() {
            return Err(MatrixError::forbidden(format!("{user_id} is not a user of this server")));
        }
        if content.get("membership").and_then(Value::as_str) != Some(membership) {
            return Err(MatrixError::bad_json(format!("A {membership} event's membership must be {membership}")));
        }
        let mut candidates: Vec<OwnedServerName> = Vec::new();
        for server in servers {
            if server != self.server_name && !candidates.contains(&server) {
                candidates.push(server);
            }
        }
        Ok(candidates)
    }

    /// Try each candidate server in turn; the first that lets the user in wins.
    async fn join(
        &self,
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        servers: Vec<OwnedServerName>,
        content: Value,
    ) -> FederationPerformReply {
        let candidates = self.candidates(&user_id, &content, "join", servers)?;
        if candidates.is_empty() {
            return Err(MatrixError::not_found(format!("No known server can let {user_id} into {room_id}")));
        }
        let mut refusal = None;
        for server in &candidates {
            let joined = match self.join_through(server, &room_id, &user_id, &content).await {
                Ok(joined) => joined,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "could not join through this server");
                    refusal = Some(refusal_of(error));
                    continue;
                }
            };
            let Joined { signed, state, auth_chain } = joined;
            let event_id = signed.event_id.clone();
            let request = InputRequest::JoinedRemoteRoom(JoinedRemoteRoom {
                room_id: room_id.clone(),
                room_version: signed.room_version.to_string(),
                origin: server.clone(),
                join_event: CanonicalJsonValue::Object(signed.event).into(),
                state,
                auth_chain,
            });
            let reply: Result<InputReply, _> =
                self.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, PERFORM_TIMEOUT).await;
            match reply {
                Ok(Ok(InputOk::EventSent { .. })) => return Ok(FederationPerformOk::Joined { room_id, event_id }),
                Ok(Ok(other)) => {
                    tracing::error!(?other, "room server answered JoinedRemoteRoom with another kind");
                    return Err(MatrixError::internal());
                }
                // The state that server sent did not hold up: another may do better.
                Ok(Err(error)) => {
                    tracing::info!(%server, %room_id, %error, "the room server refused the joined room");
                    refusal = Some(error);
                }
                Err(error) => {
                    tracing::warn!(%error, "room server did not take the joined room");
                    return Err(MatrixError::internal());
                }
            }
        }
        Err(refusal.unwrap_or_else(|| MatrixError::not_found("No server could be reached")))
    }

    /// Knock on a room through each candidate server in turn (`/make_knock`,
    /// a knock event built and signed here, `/send_knock`); the first that
    /// takes it wins, and the room server keeps the knock with the stripped
    /// state that server answered with.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#knocking-upon-a-room>
    async fn knock(
        &self,
        room_id: OwnedRoomId,
        user_id: OwnedUserId,
        servers: Vec<OwnedServerName>,
        content: Value,
    ) -> FederationPerformReply {
        let candidates = self.candidates(&user_id, &content, "knock", servers)?;
        let mut refusal = None;
        for server in &candidates {
            let (signed, knock_room_state) = match self.knock_through(server, &room_id, &user_id, &content).await {
                Ok(knocked) => knocked,
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "could not knock through this server");
                    refusal = Some(refusal_of(error));
                    continue;
                }
            };
            let event_id = signed.event_id.clone();
            let request = InputRequest::KnockedRemoteRoom(KnockedRemoteRoom {
                room_id: room_id.clone(),
                room_version: signed.room_version.to_string(),
                event_id: event_id.clone(),
                event: CanonicalJsonValue::Object(signed.event).into(),
                knock_room_state,
            });
            let reply: Result<InputReply, _> =
                self.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, PERFORM_TIMEOUT).await;
            return match reply {
                Ok(Ok(InputOk::EventSent { .. })) => Ok(FederationPerformOk::Knocked { room_id, event_id }),
                Ok(Ok(other)) => {
                    tracing::error!(?other, "room server answered KnockedRemoteRoom with another kind");
                    Err(MatrixError::internal())
                }
                Ok(Err(error)) => Err(error),
                Err(error) => {
                    tracing::warn!(%error, "room server did not take the knock");
                    Err(MatrixError::internal())
                }
            };
        }
        Err(refusal.unwrap_or_else(|| {
            MatrixError::not_found(format!("No known server can take {user_id}'s knock on {room_id}"))
        }))
    }

    /// `/make_knock`, sign, `/send_knock` through `server`: the knock and
    /// the stripped state the server answered with.
    async fn knock_through(
        &self,
        server: &OwnedServerName,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        content: &Value,
    ) -> Result<(SignedJoin, Vec<Value>), JoinError> {
        let versions: Vec<&str> = JOINABLE_VERSIONS
            .iter()
            .copied()
            .filter(|v| {
                RoomVersionId::try_from(*v).ok().and_then(|v| v.rules()).is_some_and(|r| r.authorization.knocking)
            })
            .collect();
        let signed = self.make_and_sign("make_knock", &versions, server, room_id, user_id, content).await?;
        let event = Value::from(CanonicalJsonValue::Object(signed.event.clone()));
        let path = format!(
            "/_matrix/federation/v1/send_knock/{}/{}",
            encode(room_id.as_str()),
            encode(signed.event_id.as_str())
        );
        let response = self.client.send(FederationRequest::put(server.as_str(), path, event)).await?;
        let knock_room_state =
            response.get("knock_room_state").and_then(Value::as_array).cloned().ok_or_else(|| {
                JoinError::BadResponse { server: server.to_string(), reason: "no knock_room_state".to_owned() }
            })?;
        Ok((signed, knock_room_state))
    }

    /// Leave a room this server is not in (rejecting an invite) through
    /// `servers` in turn: `/make_leave`, a leave event built and signed
    /// here, `/send_leave` v2 with a v1 fallback.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>
    pub(crate) async fn leave(
        &self,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        servers: &[OwnedServerName],
    ) -> FederationQueryReply {
        if user_id.server_name().as_str() != self.server_name.as_str() {
            return Err(MatrixError::forbidden(format!("{user_id} is not a user of this server")));
        }
        let mut refusal = None;
        for server in servers.iter().filter(|server| **server != self.server_name) {
            match self.leave_through(server, room_id, user_id).await {
                Ok(signed) => {
                    return Ok(FederationQueryOk::Left {
                        room_version: signed.room_version.to_string(),
                        event_id: signed.event_id,
                        event: CanonicalJsonValue::Object(signed.event).into(),
                    });
                }
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, "could not leave through this server");
                    refusal = Some(refusal_of(error));
                }
            }
        }
        Err(refusal.unwrap_or_else(|| MatrixError::not_found(format!("No known server can take {user_id}'s leave"))))
    }

    async fn leave_through(
        &self,
        server: &OwnedServerName,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
    ) -> Result<SignedJoin, JoinError> {
        let path =
            format!("/_matrix/federation/v1/make_leave/{}/{}", encode(room_id.as_str()), encode(user_id.as_str()));
        let template = self.client.send(FederationRequest::get(server.as_str(), path)).await?;
        let signed = self.sign_membership(server, room_id, user_id, &json!({"membership": "leave"}), &template)?;
        let event = Value::from(CanonicalJsonValue::Object(signed.event.clone()));
        let tail = format!("{}/{}", encode(room_id.as_str()), encode(signed.event_id.as_str()));
        let v2 =
            FederationRequest::put(server.as_str(), format!("/_matrix/federation/v2/send_leave/{tail}"), event.clone());
        match self.client.send(v2).await {
            Ok(_) => {}
            Err(ClientError::Status { status: 404 | 400, body, .. }) if body["errcode"] == "M_UNRECOGNIZED" => {
                let v1 =
                    FederationRequest::put(server.as_str(), format!("/_matrix/federation/v1/send_leave/{tail}"), event);
                self.client.send(v1).await?;
            }
            Err(error) => return Err(error.into()),
        }
        Ok(signed)
    }

    /// Ask the alias's own server which room it names.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1querydirectory>
    async fn resolve_alias(&self, alias: &OwnedRoomAliasId) -> FederationPerformReply {
        let server = alias.server_name();
        let path = format!("/_matrix/federation/v1/query/directory?room_alias={}", encode(alias.as_str()));
        let answer = match self.client.send(FederationRequest::get(server.as_str(), path)).await {
            Ok(answer) => answer,
            Err(ClientError::Status { status: 404, .. }) => {
                return Err(MatrixError::not_found(format!("Room alias {alias} not found")));
            }
            Err(error) => {
                tracing::info!(%alias, %error, "alias query failed");
                return Err(refusal_of(JoinError::Remote(error)));
            }
        };
        let room_id = answer
            .get("room_id")
            .and_then(Value::as_str)
            .and_then(|id| OwnedRoomId::try_from(id).ok())
            .ok_or_else(|| MatrixError::not_found(format!("{server} gave no valid room for {alias}")))?;
        // The alias's own server first: it answered, so it is in the room.
        let mut servers = vec![server.to_owned()];
        let listed = answer.get("servers").and_then(Value::as_array).into_iter().flatten();
        servers.extend(listed.filter_map(Value::as_str).filter_map(|s| OwnedServerName::try_from(s).ok()));
        servers.dedup();
        Ok(FederationPerformOk::Alias { room_id, servers })
    }

    /// `/make_join`, sign, `/send_join` through `server`.
    async fn join_through(
        &self,
        server: &OwnedServerName,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        content: &Value,
    ) -> Result<Joined, JoinError> {
        let signed = self.make_and_sign("make_join", JOINABLE_VERSIONS, server, room_id, user_id, content).await?;
        let event = Value::from(CanonicalJsonValue::Object(signed.event.clone()));
        let tail = format!("{}/{}", encode(room_id.as_str()), encode(signed.event_id.as_str()));
        let v2 =
            FederationRequest::put(server.as_str(), format!("/_matrix/federation/v2/send_join/{tail}"), event.clone());
        let response = match self.client.send(v2).await {
            Ok(response) => response,
            Err(ClientError::Status { status: 404 | 400, body, .. }) if body["errcode"] == "M_UNRECOGNIZED" => {
                let v1 =
                    FederationRequest::put(server.as_str(), format!("/_matrix/federation/v1/send_join/{tail}"), event);
                // v1 answers `[200, {…}]`.
                self.client.send(v1).await?.get_mut(1).map(Value::take).unwrap_or(Value::Null)
            }
            Err(error) => return Err(error.into()),
        };
        let bad = |reason: &str| JoinError::BadResponse { server: server.to_string(), reason: reason.to_owned() };
        let list = |name: &str| response.get(name).and_then(Value::as_array).cloned();
        let state = list("state").ok_or_else(|| bad("no state"))?;
        let auth_chain = list("auth_chain").ok_or_else(|| bad("no auth_chain"))?;
        let signed = countersigned(signed, &response, self.server_name.as_str()).map_err(bad)?;
        // Signatures and hashes of the state and chain are checked by the
        // room server's pipeline, which every PDU goes through.
        Ok(Joined { signed, state, auth_chain })
    }

    /// The join or leave event (`content`'s membership) from the template:
    /// only the room's structure (room id, prev and auth events, depth)
    /// comes from the remote server; the rest is this server's own, so it
    /// signs nothing it did not choose (DESIGN.md invariant 7).
    fn sign_membership(
        &self,
        server: &OwnedServerName,
        room_id: &OwnedRoomId,
        user_id: &OwnedUserId,
        content: &Value,
        answer: &Value,
    ) -> Result<SignedJoin, JoinError> {
        let membership = content.get("membership").and_then(Value::as_str).unwrap_or_default();
        let Template { room_version, rules, prev_events, auth_events, depth, authorised_via } =
            read_template(answer, room_id, user_id, membership)
                .map_err(|reason| JoinError::BadTemplate { server: server.to_string(), reason: reason.to_owned() })?;
        let mut content = content.clone();
        if let (Some(via), Some(fields)) = (authorised_via.filter(|_| membership == "join"), content.as_object_mut()) {
            fields.insert("join_authorised_via_users_server".into(), json!(via));
        }
        let mut fields = Map::new();
        fields.insert("type".into(), json!("m.room.member"));
        fields.insert("sender".into(), json!(user_id));
        fields.insert("state_key".into(), json!(user_id));
        fields.insert("room_id".into(), json!(room_id));
        fields.insert("content".into(), content);
        fields.insert("prev_events".into(), prev_events);
        fields.insert("auth_events".into(), auth_events);
        fields.insert("depth".into(), json!(depth));
        fields.insert("origin_server_ts".into(), json!(self.clock.now_ms()));
        // `origin` only means something where redaction keeps it (up to v10).
        if rules.redaction.keep_origin_membership_prev_state {
            fields.insert("origin".into(), json!(self.server_name));
        }
        // Room versions 1 and 2 carry a random id that names its server.
        let carried_id =
            rules.event_format.require_event_id.then(|| format!("${}:{}", alphanumeric(18), self.server_name));
        if let Some(id) = &carried_id {
            fields.insert("event_id".into(), json!(id));
        }
        let mut event = match CanonicalJsonValue::try_from(Value::Object(fields)) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            _ => {
                return Err(JoinError::BadTemplate { server: server.to_string(), reason: "not canonical JSON".into() });
            }
        };
        hash_and_sign_event(self.server_name.as_str(), &self.signing_key.keypair, &mut event, &rules.redaction)
            .map_err(|e| JoinError::Sign(e.to_string()))?;
        let event_id = match carried_id {
            Some(id) => id,
            None => format!("${}", reference_hash(&event, &rules).map_err(|e| JoinError::Sign(e.to_string()))?),
        };
        let event_id = OwnedEventId::try_from(event_id).map_err(|e| JoinError::Sign(e.to_string()))?;
        Ok(SignedJoin { room_version, event_id, event })
    }
}

/// What this server takes from a `/make_join` answer: the room's version
/// and structure, nothing that would be signed as the remote chose it.
struct Template {
    room_version: RoomVersionId,
    rules: RoomVersionRules,
    prev_events: Value,
    auth_events: Value,
    depth: i64,
    /// The resident server's user who vouches for a restricted join.
    authorised_via: Option<OwnedUserId>,
}

/// Check that a `/make_join` (`/make_leave`) answer is a `membership` event
/// of `user_id` in `room_id`, in a room version this server can join, and
/// take its structure.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_joinroomiduserid>
fn read_template(
    answer: &Value,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
) -> Result<Template, &'static str> {
    // Servers that predate room versions omit it: then it is version 1.
    let version = answer.get("room_version").and_then(Value::as_str).unwrap_or("1");
    let room_version = RoomVersionId::try_from(version).map_err(|_| "invalid room_version")?;
    let rules =
        room_version.rules().filter(|_| JOINABLE_VERSIONS.contains(&version)).ok_or("room version not supported")?;
    let template = answer.get("event").and_then(Value::as_object).ok_or("no event")?;
    let field = |name: &str| template.get(name).and_then(Value::as_str);
    if field("type") != Some("m.room.member")
        || field("sender") != Some(user_id.as_str())
        || field("state_key") != Some(user_id.as_str())
        || field("room_id") != Some(room_id.as_str())
        || template.get("content").and_then(|c| c.get("membership")).and_then(Value::as_str) != Some(membership)
    {
        return Err("not this user's membership event in this room");
    }
    let refs = |name: &str| template.get(name).filter(|refs| refs.is_array()).cloned();
    let prev_events = refs("prev_events").ok_or("no prev_events")?;
    let auth_events = refs("auth_events").ok_or("no auth_events")?;
    let depth = template.get("depth").and_then(Value::as_i64).filter(|d| *d > 0).ok_or("no depth")?;
    let authorised_via = match template.get("content").and_then(|c| c.get("join_authorised_via_users_server")) {
        None => None,
        Some(via) => Some(via.as_str().and_then(|via| OwnedUserId::try_from(via).ok()).ok_or("invalid authoriser")?),
    };
    Ok(Template { room_version, rules, prev_events, auth_events, depth, authorised_via })
}

/// A restricted join as the resident server answered it: the event this
/// server sent with the authorising server's signature added. Anything
/// else about it must be unchanged; the room server's pipeline checks the
/// added signature.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#restricted-rooms>
fn countersigned(mut signed: SignedJoin, response: &Value, ours: &str) -> Result<SignedJoin, &'static str> {
    let restricted = matches!(signed.event.get("content"), Some(CanonicalJsonValue::Object(content))
        if content.contains_key("join_authorised_via_users_server"));
    if !restricted {
        return Ok(signed);
    }
    let event = response.get("event").cloned().ok_or("no countersigned event")?;
    let Ok(CanonicalJsonValue::Object(event)) = CanonicalJsonValue::try_from(event) else {
        return Err("the countersigned event is not canonical JSON");
    };
    let unsigned = |object: &CanonicalJsonObject| {
        let mut object = object.clone();
        object.remove("signatures");
        object
    };
    if unsigned(&event) != unsigned(&signed.event) {
        return Err("the countersigned event is not the join sent");
    }
    if signatures_of(&event, ours) != signatures_of(&signed.event, ours) {
        return Err("the countersigned event changed this server's signature");
    }
    signed.event = event;
    Ok(signed)
}

/// The signatures of `server` on `event`.
fn signatures_of<'a>(event: &'a CanonicalJsonObject, server: &str) -> Option<&'a CanonicalJsonValue> {
    match event.get("signatures") {
        Some(CanonicalJsonValue::Object(all)) => all.get(server),
        _ => None,
    }
}

/// A `send_join` that went through.
struct Joined {
    signed: SignedJoin,
    state: Vec<Value>,
    auth_chain: Vec<Value>,
}

/// What the user hears when no server let them in: the resident server's
/// own refusal when there was one (403, 404, incompatible version); 404
/// when no server could be reached at all (from here the room does not
/// exist, and the request was not at fault); else that the room's servers
/// misbehaved (502).
fn refusal_of(error: JoinError) -> MatrixError {
    match error {
        JoinError::Remote(ClientError::Status { status, body, .. }) => {
            let message = body["error"].as_str().unwrap_or("The resident server refused the join").to_owned();
            match body["errcode"].as_str() {
                Some("M_FORBIDDEN") => MatrixError::forbidden(message),
                Some("M_INCOMPATIBLE_ROOM_VERSION") => MatrixError::new(ErrorCode::IncompatibleRoomVersion, message),
                Some("M_UNABLE_TO_AUTHORISE_JOIN") => MatrixError::new(ErrorCode::UnableToAuthoriseJoin, message),
                Some("M_UNABLE_TO_GRANT_JOIN") => MatrixError::new(ErrorCode::UnableToGrantJoin, message),
                _ if status == 404 => MatrixError::not_found(message),
                _ => MatrixError::new(ErrorCode::Unknown, message).with_status(http::StatusCode::BAD_GATEWAY),
            }
        }
        JoinError::Remote(
            unreachable @ (ClientError::Discovery { .. } | ClientError::Connect { .. } | ClientError::Timeout { .. }),
        ) => MatrixError::not_found(format!("No server of the room could be reached: {unreachable}")),
        other => MatrixError::new(ErrorCode::Unknown, other.to_string()).with_status(http::StatusCode::BAD_GATEWAY),
    }
}

#[cfg(test)]
mod tests {
    use myelin_types::ruma::{RoomId, UserId};
    use serde_json::{Value, json};

    use super::read_template;

    fn answer() -> Value {
        json!({
            "room_version": "12",
            "event": {
                "type": "m.room.member",
                "sender": "@bob:b.example",
                "state_key": "@bob:b.example",
                "room_id": "!room:a.example",
                "content": {"membership": "join"},
                "prev_events": ["$prev"],
                "auth_events": ["$auth"],
                "depth": 7,
            },
        })
    }

    fn read(answer: &Value) -> Result<i64, &'static str> {
        let room = <&RoomId>::try_from("!room:a.example").unwrap();
        let user = <&UserId>::try_from("@bob:b.example").unwrap();
        read_template(answer, room, user, "join").map(|template| template.depth)
    }

    #[test]
    fn a_join_template_gives_its_structure() {
        assert_eq!(read(&answer()), Ok(7));
        let mut v1 = answer();
        v1.as_object_mut().unwrap().remove("room_version");
        assert_eq!(read(&v1), Ok(7), "no room_version means version 1");
    }

    #[test]
    fn every_unusable_template_is_refused() {
        let cases: [(&str, Value); 9] = [
            ("/room_version", json!("99")),
            ("/event/type", json!("m.room.message")),
            ("/event/sender", json!("@mallory:b.example")),
            ("/event/state_key", json!("@mallory:b.example")),
            ("/event/room_id", json!("!other:a.example")),
            ("/event/content/membership", json!("leave")),
            ("/event/prev_events", json!("$prev")),
            ("/event/auth_events", Value::Null),
            ("/event/depth", json!(0)),
        ];
        for (pointer, value) in cases {
            let mut bad = answer();
            *bad.pointer_mut(pointer).unwrap() = value;
            assert!(read(&bad).is_err(), "{pointer} accepted");
        }
        assert!(read(&json!({"room_version": "12"})).is_err(), "no event");
    }
}
