//! Invites across servers. `ReceivedInvite`: another server asks this one
//! to countersign an invite of a local user. Only a well-formed invite is signed, never a body as
//! received (DESIGN.md invariant 7): the PDU passes the state-free checks
//! of the one pipeline with its content hash intact, is an `m.room.member`
//! invite whose state_key is a user of this server, and its sender belongs
//! to the origin. `invite_remote`: a local user invites another server's
//! user, whose server countersigns first.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#inviting-to-a-room>

use myelin_types::MatrixError;
use ruma::signatures::sign_json;
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedEventId, RoomVersionId, ServerName, UserId};
use serde_json::{Value, json};

use super::{InputConsumer, Outcome};
use crate::api::{
    FEDERATION_QUERY_TOPIC, FederationQuery, FederationQueryOk, FederationQueryReply, InputOk, NewRoomEvent,
    PERFORM_TIMEOUT, ReceivedInvite, SendEvent, StateDelta, StoredEvent,
};
use crate::error::RequestError;
use crate::events::pdu::Pdu;
use crate::events::receive::KeyRing;
use crate::events::stripped::stripped_state;
use crate::events::{Built, LocalEvent, Room};
use crate::storage::{EventStatus, NewEvent, Tx};

impl InputConsumer {
    pub(super) async fn received_invite(
        &self,
        correlation_id: &str,
        invite: ReceivedInvite,
    ) -> Result<Outcome, RequestError> {
        let rules = RoomVersionId::try_from(invite.room_version.as_str())
            .ok()
            .and_then(|version| version.rules())
            .ok_or_else(|| RequestError::IncompatibleRoomVersion(invite.room_version.clone()))?;
        // Before anything is fetched: an invite that is not one is refused cheaply.
        self.check_invite(&invite.event, &invite.origin)?;
        let sent = CanonicalJsonValue::try_from(invite.event.clone())
            .map_err(|e| RequestError::BadJson(format!("the invite is not canonical JSON: {e}")))?;
        let mut keys = KeyRing::new(&self.signer);
        let received = match self.check_all(&mut keys, &invite.room_id, &rules, vec![invite.event]).await.pop() {
            Some(Ok(received)) => received,
            Some(Err((_, reason))) => return Err(RequestError::Forbidden(format!("the invite was refused: {reason}"))),
            None => return Err(RequestError::Internal("no result for the invite".into())),
        };
        let mut object: CanonicalJsonObject = serde_json::from_str(&received.json)?;
        // A content hash mismatch redacts the event; its sender would get
        // back something else than it sent, signed by us.
        if sent != CanonicalJsonValue::Object(object.clone()) {
            return Err(RequestError::Forbidden("the invite's content hash does not match".into()));
        }
        sign_json(self.signer.server_name.as_str(), &self.signer.key.keypair, &mut object)
            .map_err(|e| RequestError::Internal(format!("signing the invite: {e}")))?;
        let signed = serde_json::to_value(&object)?;
        let reply = InputOk::InviteSigned { event: signed.clone() };

        let room_id = invite.room_id.as_str();
        let event_id = received.event_id.as_str();
        let invitee = received.pdu.state_key.clone().unwrap_or_default();
        let mut tx = Tx::write(&self.db).await?;
        let mut outputs = Vec::new();
        if tx.room(room_id).await?.is_none() && tx.known_event(event_id).await?.is_none() {
            let mut stored = signed;
            if let Some(fields) = stored.as_object_mut() {
                let unsigned = fields.entry("unsigned").or_insert_with(|| json!({}));
                if !unsigned.is_object() {
                    *unsigned = json!({});
                }
                unsigned["invite_room_state"] = Value::Array(invite.invite_room_state);
            }
            tx.insert_event(&NewEvent {
                event_id,
                room_id,
                event_type: "m.room.member",
                state_key: Some(&invitee),
                depth: received.depth,
                state_before: None,
                state_after: None,
                status: EventStatus::Outlier,
                pdu: &stored.to_string(),
                origin_server_ts: i64::from(received.pdu.origin_server_ts.get()),
                // A room this server is not in: its auth events are not here.
                auth_events: None,
            })
            .await?;
            tx.set_membership(room_id, &invitee, "invite", event_id).await?;
            let event =
                StoredEvent { event_id: received.event_id.clone(), room_id: invite.room_id.clone(), pdu: stored };
            outputs.push(NewRoomEvent {
                event: event.clone(),
                room_version: invite.room_version,
                state_delta: StateDelta { added: vec![event], removed: Vec::new() },
                txn: None,
                historical: false,
            });
        }
        self.commit_with(tx, correlation_id, reply, outputs).await
    }

    /// An invite of a user of this server by a user of `origin`. Checked on
    /// the event as received: the signature checks that follow make sure
    /// these fields are the ones signed.
    fn check_invite(&self, event: &Value, origin: &ServerName) -> Result<(), RequestError> {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        if field("type") != Some("m.room.member")
            || event.pointer("/content/membership").and_then(Value::as_str) != Some("invite")
        {
            return Err(RequestError::BadJson("the event is not an invite".into()));
        }
        let invitee = field("state_key")
            .and_then(|key| UserId::parse(key).ok())
            .ok_or_else(|| RequestError::BadJson("the invite's state_key is not a user id".into()))?;
        if invitee.server_name() != self.signer.server_name {
            return Err(RequestError::Forbidden(format!("{invitee} is not a user of this server")));
        }
        let sender = field("sender")
            .and_then(|sender| UserId::parse(sender).ok())
            .ok_or_else(|| RequestError::BadJson("the invite's sender is not a user id".into()))?;
        if sender.server_name() != origin {
            return Err(RequestError::Forbidden(format!("the inviter {sender} does not belong to {origin}")));
        }
        Ok(())
    }
}

impl InputConsumer {
    /// `SendEvent` inviting a user of another server: the invitee's server
    /// countersigns the invite (`/invite`) before it is stored, and its
    /// refusal is the request's. The room is read, then written, in two
    /// transactions around the federation request (none is held across a
    /// bus request); input for a room is handled one request at a time, so
    /// the room does not change in between.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#inviting-to-a-room>
    pub(super) async fn invite_remote(
        &self,
        correlation_id: &str,
        request: SendEvent,
    ) -> Result<Outcome, RequestError> {
        let invitee_server = request
            .state_key
            .as_deref()
            .and_then(|key| UserId::parse(key).ok())
            .map(|user| user.server_name().to_owned())
            .ok_or_else(|| RequestError::InvalidParam("the invitee is not a user id".into()))?;
        let mut tx = Tx::read(&self.db).await?;
        if let Some(txn) = &request.txn
            && let Some(event_id) = tx.txn_event(request.sender.as_str(), txn).await?
        {
            tx.commit().await?;
            let event_id = OwnedEventId::try_from(event_id).map_err(|e| RequestError::Internal(e.to_string()))?;
            let tx = Tx::write(&self.db).await?;
            return self.commit_with(tx, correlation_id, InputOk::EventSent { event_id }, Vec::new()).await;
        }
        let unknown = || RequestError::Forbidden(format!("unknown room {}", request.room_id));
        let mut room = Room::load(&mut tx, &request.room_id).await?.ok_or_else(unknown)?;
        let local = LocalEvent {
            sender: &request.sender,
            event_type: &request.event_type,
            state_key: request.state_key.as_deref(),
            content: &request.content,
        };
        let (built, depth) = room.prepare(&mut tx, &self.signer, local, self.bus.clock().now_ms()).await?;
        let invite_room_state =
            stripped_state(&mut tx, request.room_id.as_str(), Some(request.sender.as_str())).await?;
        tx.commit().await?;

        let query = FederationQuery::Invite {
            room_id: request.room_id.clone(),
            event_id: built.event_id.clone(),
            room_version: room.version.to_string(),
            event: serde_json::from_str(&built.json)?,
            invite_room_state,
        };
        let reply: FederationQueryReply = self
            .bus
            .request_json(FEDERATION_QUERY_TOPIC, invitee_server.as_str(), &query, PERFORM_TIMEOUT)
            .await
            .map_err(|e| RequestError::Internal(format!("the federation API did not answer an invite: {e}")))?;
        let returned = match reply {
            Ok(FederationQueryOk::Pdus { mut pdus }) if pdus.len() == 1 => pdus.pop().expect("one"),
            Ok(other) => return Err(RequestError::Internal(format!("unexpected answer to an invite: {other:?}"))),
            Err(refusal) => return Err(RequestError::Remote(refusal)),
        };
        let built = countersigned(built, &returned, &invitee_server)?;

        let mut tx = Tx::write(&self.db).await?;
        let mut room = Room::load(&mut tx, &request.room_id).await?.ok_or_else(unknown)?;
        let accepted = room.append_prepared(&mut tx, built, depth).await?;
        super::commit_sent(tx, correlation_id, request, accepted, room.version.to_string()).await
    }
}

/// `built` with the signature `server` added to the copy it returned, which
/// must be the same event otherwise (all but `signatures` and `unsigned`).
fn countersigned(built: Built, returned: &Value, server: &ServerName) -> Result<Built, RequestError> {
    let refused = |why: &str| RequestError::Remote(MatrixError::forbidden(format!("{server} {why}")));
    let mut ours: CanonicalJsonObject = serde_json::from_str(&built.json)?;
    let Ok(CanonicalJsonValue::Object(mut theirs)) = CanonicalJsonValue::try_from(returned.clone()) else {
        return Err(refused("returned an invite that is not canonical JSON"));
    };
    let their_signatures = theirs.remove("signatures");
    theirs.remove("unsigned");
    let mut compared = ours.clone();
    let our_signatures = compared.remove("signatures");
    compared.remove("unsigned");
    if compared != theirs {
        return Err(refused("returned another event than the invite it was sent"));
    }
    let signature = match their_signatures {
        Some(CanonicalJsonValue::Object(mut signatures)) => signatures.remove(server.as_str()),
        _ => None,
    };
    let (Some(signature), Some(CanonicalJsonValue::Object(mut signatures))) = (signature, our_signatures) else {
        return Err(refused("did not sign the invite"));
    };
    signatures.insert(server.to_string(), signature);
    ours.insert("signatures".to_owned(), CanonicalJsonValue::Object(signatures));
    let json = serde_json::to_string(&ours)?;
    let pdu = Pdu::parse(built.event_id.clone(), &json)?;
    Ok(Built { event_id: built.event_id, json, pdu })
}

impl InputConsumer {
    /// `SendEvent` of a local user's leave from a room this server is not
    /// in but was invited to (rejecting the invite) or knocked on
    /// (rescinding the knock): the leave goes through a server of the room
    /// (the inviter's, or those whose users sent the stripped state a knock
    /// was answered with; then the room id's where it names one) and is
    /// kept like the invite or knock, as an outlier the user sees. `None`
    /// for any other event.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#leaving-rooms-rejecting-invites>
    pub(super) async fn leave_remote(
        &self,
        correlation_id: &str,
        request: &SendEvent,
    ) -> Result<Option<Outcome>, RequestError> {
        let user = request.sender.as_str();
        let room_id = request.room_id.as_str();
        if request.event_type != "m.room.member"
            || request.state_key.as_deref() != Some(user)
            || request.content.get("membership").and_then(Value::as_str) != Some("leave")
        {
            return Ok(None);
        }
        let mut tx = Tx::read(&self.db).await?;
        if tx.room(room_id).await?.is_some() {
            return Ok(None);
        }
        let outside = match tx.membership(room_id, user).await? {
            Some((membership, event_id)) if membership == "invite" || membership == "knock" => {
                tx.event_pdu(&event_id).await?
            }
            _ => None,
        };
        tx.commit().await?;
        let Some(outside) = outside else { return Ok(None) };
        let outside: Value = serde_json::from_str(&outside)?;
        let knock_state = outside.pointer("/unsigned/knock_room_state").and_then(Value::as_array);
        let senders = std::iter::once(&outside).chain(knock_state.into_iter().flatten());
        let mut servers = Vec::new();
        let residents = senders
            .filter_map(|event| event.get("sender").and_then(Value::as_str).and_then(|s| UserId::parse(s).ok()))
            .map(|sender| sender.server_name().to_owned())
            .chain(request.room_id.server_name().map(ToOwned::to_owned));
        for server in residents {
            if server != self.signer.server_name && !servers.contains(&server) {
                servers.push(server);
            }
        }
        let query =
            FederationQuery::Leave { room_id: request.room_id.clone(), user_id: request.sender.clone(), servers };
        let reply: FederationQueryReply = self
            .bus
            .request_json(FEDERATION_QUERY_TOPIC, room_id, &query, PERFORM_TIMEOUT)
            .await
            .map_err(|e| RequestError::Internal(format!("the federation API did not answer a leave: {e}")))?;
        let (room_version, event_id, event) = match reply {
            Ok(FederationQueryOk::Left { room_version, event_id, event }) => (room_version, event_id, event),
            Ok(other) => return Err(RequestError::Internal(format!("unexpected answer to a leave: {other:?}"))),
            Err(refusal) => return Err(RequestError::Remote(refusal)),
        };

        let mut tx = Tx::write(&self.db).await?;
        let mut outputs = Vec::new();
        if tx.known_event(event_id.as_str()).await?.is_none() {
            tx.insert_event(&NewEvent {
                event_id: event_id.as_str(),
                room_id,
                event_type: "m.room.member",
                state_key: Some(user),
                depth: event.get("depth").and_then(Value::as_i64).unwrap_or(0),
                state_before: None,
                state_after: None,
                status: EventStatus::Outlier,
                pdu: &event.to_string(),
                origin_server_ts: event.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0),
                auth_events: None,
            })
            .await?;
            tx.set_membership(room_id, user, "leave", event_id.as_str()).await?;
            let event = StoredEvent { event_id: event_id.clone(), room_id: request.room_id.clone(), pdu: event };
            outputs.push(NewRoomEvent {
                event: event.clone(),
                room_version,
                state_delta: StateDelta { added: vec![event], removed: Vec::new() },
                txn: request.txn.clone(),
                historical: false,
            });
        }
        self.commit_with(tx, correlation_id, InputOk::EventSent { event_id }, outputs).await.map(Some)
    }
}
