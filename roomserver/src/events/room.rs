//! One room as the input pipeline sees it while appending local events:
//! its version, latest events and the state they need for auth.

use std::collections::HashMap;

use myelin_types::redaction::{RoomAuth, may_redact};
use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules};
use ruma::signatures::reference_hash;
use ruma::state_res::{auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules};
use ruma::{CanonicalJsonObject, EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::value::to_raw_value;
use serde_json::{Value, json};

use super::Signer;
use super::build::{Built, Draft, build, cite};
use super::pdu::Pdu;
use crate::api::StoredEvent;
use crate::error::RequestError;
use crate::storage::{EventStatus, NewEvent, StateMap, Tx, append_state};

mod restricted;

/// The fields of a stored PDU that [`may_redact`] reads.
fn pdu_json(pdu: &Pdu) -> Result<Value, RequestError> {
    Ok(json!({ "sender": pdu.sender, "content": serde_json::from_str::<Value>(pdu.content.get())? }))
}

/// At most this many `prev_events` per PDU.
const MAX_PREV_EVENTS: i64 = 20;

/// An event that entered the room.
pub struct Accepted {
    pub event: StoredEvent,
    pub is_state: bool,
}

/// Where a new event goes in the room; see [`Room::position`].
struct Position {
    auth_events: Vec<OwnedEventId>,
    create: Pdu,
    depth: i64,
    prev_events: Vec<OwnedEventId>,
    reference_hashes: HashMap<OwnedEventId, String>,
}

/// What a local user asks to put into a room.
pub struct LocalEvent<'a> {
    pub sender: &'a UserId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
}

pub struct Room {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    rules: RoomVersionRules,
    /// State before the next event (= after the latest one).
    snapshot: Option<i64>,
    extremities: Vec<(OwnedEventId, i64)>,
    /// Current state events read so far (`None`: known to be absent).
    state: HashMap<(String, String), Option<Pdu>>,
}

fn rules_of(version: &RoomVersionId) -> Result<RoomVersionRules, RequestError> {
    version.rules().ok_or_else(|| RequestError::UnsupportedRoomVersion(version.to_string()))
}

impl Room {
    /// Start a room with its create event, which fixes the room id: random
    /// before v12, derived from the create event's id from v12 on.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/rooms/v12/#room-ids>
    pub async fn create(
        tx: &mut Tx,
        signer: &Signer,
        version: RoomVersionId,
        creator: &UserId,
        content: &Value,
        origin_server_ts: u64,
    ) -> Result<(Self, Accepted), RequestError> {
        let rules = rules_of(&version)?;
        let random_id =
            (!rules.authorization.room_create_event_id_as_room_id).then(|| RoomId::new_v1(&signer.server_name));
        let mut origin_server_ts = origin_server_ts;
        let (built, room_id) = loop {
            let draft = Draft {
                room_id: random_id.as_deref(),
                sender: creator,
                event_type: "m.room.create",
                state_key: Some(""),
                content,
                prev_events: Vec::new(),
                auth_events: Vec::new(),
                reference_hashes: HashMap::new(),
                depth: 1,
                origin_server_ts,
            };
            let built = build(signer, &rules, draft)?;
            let room_id = match &random_id {
                Some(room_id) => room_id.clone(),
                None => {
                    RoomId::new_v2(built.event_id.localpart()).map_err(|e| RequestError::Internal(e.to_string()))?
                }
            };
            // From v12 the id is the create event's hash: the same creator and
            // content in the same millisecond would make the same room again.
            if tx.room(room_id.as_str()).await?.is_none() {
                break (built, room_id);
            }
            origin_server_ts += 1;
        };
        check_state_independent_auth_rules(&rules.authorization, &built.pdu, |_| None::<&Pdu>)
            .map_err(RequestError::Forbidden)?;
        tx.insert_room(room_id.as_str(), version.as_str()).await?;
        let mut room = Self { room_id, version, rules, snapshot: None, extremities: Vec::new(), state: HashMap::new() };
        let accepted = room.persist(tx, built.event_id, built.json, built.pdu, 1).await?;
        Ok((room, accepted))
    }

    /// The room as stored, or `None` if this server has no such room.
    pub async fn load(tx: &mut Tx, room_id: &RoomId) -> Result<Option<Self>, RequestError> {
        let Some(row) = tx.room(room_id.as_str()).await? else { return Ok(None) };
        let version = RoomVersionId::try_from(row.version.as_str())
            .map_err(|e| RequestError::Internal(format!("stored room version: {e}")))?;
        let rules = rules_of(&version)?;
        let extremities = tx
            .forward_extremities(room_id.as_str(), MAX_PREV_EVENTS)
            .await?
            .into_iter()
            .map(|(id, depth)| {
                Ok((OwnedEventId::try_from(id).map_err(|e| RequestError::Internal(e.to_string()))?, depth))
            })
            .collect::<Result<_, RequestError>>()?;
        Ok(Some(Self {
            room_id: room_id.to_owned(),
            version,
            rules,
            snapshot: row.current_snapshot,
            extremities,
            state: HashMap::new(),
        }))
    }

    /// Build, sign, auth-check and store one event from a local user on top
    /// of the room's latest events. The state before a local event is the
    /// current state, so both auth checks use it.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#auth-events-selection> and
    /// <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>
    pub async fn append(
        &mut self,
        tx: &mut Tx,
        signer: &Signer,
        event: LocalEvent<'_>,
        origin_server_ts: u64,
    ) -> Result<Accepted, RequestError> {
        let (built, depth) = self.prepare(tx, signer, event, origin_server_ts).await?;
        self.persist(tx, built.event_id, built.json, built.pdu, depth).await
    }

    /// Store an event [`Room::prepare`] built on the room as it still is
    /// (input for a room is handled one request at a time), with the
    /// signatures another server added meanwhile (an invite's).
    pub async fn append_prepared(&mut self, tx: &mut Tx, built: Built, depth: i64) -> Result<Accepted, RequestError> {
        self.persist(tx, built.event_id, built.json, built.pdu, depth).await
    }

    /// Build, sign and auth-check one event from a local user, without
    /// storing it: the event and its depth.
    pub async fn prepare(
        &mut self,
        tx: &mut Tx,
        signer: &Signer,
        event: LocalEvent<'_>,
        origin_server_ts: u64,
    ) -> Result<(Built, i64), RequestError> {
        let LocalEvent { sender, event_type, state_key, content } = event;
        let Position { auth_events, create, depth, prev_events, reference_hashes } =
            self.position(tx, sender, event_type, state_key, content).await?;
        let draft = Draft {
            room_id: Some(&self.room_id),
            sender,
            event_type,
            state_key,
            content,
            prev_events,
            auth_events,
            reference_hashes,
            depth,
            origin_server_ts,
        };
        let built = build(signer, &self.rules, draft)?;

        let known: HashMap<&EventId, &Pdu> = self
            .state
            .values()
            .flatten()
            .chain(std::iter::once(&create))
            .map(|pdu| (pdu.event_id.as_ref(), pdu))
            .collect();
        check_state_independent_auth_rules(&self.rules.authorization, &built.pdu, |id| known.get(id).copied())
            .map_err(RequestError::Forbidden)?;
        // The rules read only the auth types and the create event, all loaded above.
        let state = &self.state;
        check_state_dependent_auth_rules(&self.rules.authorization, &built.pdu, |kind: &StateEventType, key| {
            state.get(&(kind.to_string(), key.to_owned())).and_then(Option::as_ref)
        })
        .map_err(RequestError::Forbidden)?;
        if event_type == "m.room.redaction" {
            self.check_redaction(tx, sender, content, &create).await?;
        }
        Ok((built, depth))
    }

    /// A guest account of this server may join only while the room's
    /// `m.room.guest_access` is `can_join`. Not an auth rule (other servers
    /// do not know who is a guest): each server enforces it for its own
    /// guests, here against the state the join is built on, so a change of
    /// guest access and a join cannot race.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
    pub async fn check_guest_join(&mut self, tx: &mut Tx) -> Result<(), RequestError> {
        let can_join = match self.state_event(tx, "m.room.guest_access", "").await? {
            Some(pdu) => {
                let content: Value = serde_json::from_str(pdu.content.get())?;
                content.get("guest_access").and_then(Value::as_str) == Some("can_join")
            }
            None => false,
        };
        if can_join { Ok(()) } else { Err(RequestError::Forbidden("Guests may not join this room".into())) }
    }

    /// A local user may redact another user's event only with the power to:
    /// from room version 3 on the auth rules accept any redaction, and
    /// whether it takes effect is decided where it is applied. Redactions of
    /// events this server does not have in the room are let through.
    async fn check_redaction(
        &mut self,
        tx: &mut Tx,
        sender: &UserId,
        content: &Value,
        create: &Pdu,
    ) -> Result<(), RequestError> {
        let Some(target) = content.get("redacts").and_then(Value::as_str) else { return Ok(()) };
        let Some(json) = tx.event_pdu(target).await? else { return Ok(()) };
        let target: Value = serde_json::from_str(&json)?;
        let author = target["sender"].as_str().and_then(|id| <&UserId>::try_from(id).ok());
        let Some(author) = author.filter(|_| target["room_id"] == self.room_id.as_str()) else { return Ok(()) };
        let power_levels = match self.state_event(tx, "m.room.power_levels", "").await? {
            Some(pdu) => Some(pdu_json(pdu)?),
            None => None,
        };
        let create = pdu_json(create)?;
        let room = RoomAuth { rules: &self.rules, create: Some(&create), power_levels: power_levels.as_ref() };
        if may_redact(&room, sender, author) {
            Ok(())
        } else {
            Err(RequestError::Forbidden("You may not redact other users' events in this room".into()))
        }
    }

    /// Where a new event would go: its auth events from the current state,
    /// the create event, its depth and prev events (the forward
    /// extremities), and the reference hashes rooms v1 and v2 cite them with.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#auth-events-selection>
    async fn position(
        &mut self,
        tx: &mut Tx,
        sender: &UserId,
        event_type: &str,
        state_key: Option<&str>,
        content: &Value,
    ) -> Result<Position, RequestError> {
        let raw_content = to_raw_value(content)?;
        let timeline_type = TimelineEventType::from(event_type);
        let auth_types =
            auth_types_for_event(&timeline_type, sender, state_key, &raw_content, &self.rules.authorization)
                .map_err(RequestError::BadJson)?;
        let mut auth_events = Vec::new();
        for (kind, key) in &auth_types {
            if let Some(pdu) = self.state_event(tx, &kind.to_string(), key).await? {
                auth_events.push(pdu.event_id.clone());
            }
        }
        // The create event is always needed by the state-dependent rules.
        let create = self.state_event(tx, "m.room.create", "").await?.cloned();
        let create =
            create.ok_or_else(|| RequestError::Internal(format!("room {} has no create event", self.room_id)))?;
        let depth = self.extremities.iter().map(|(_, depth)| *depth).max().unwrap_or(0) + 1;
        let prev_events: Vec<OwnedEventId> = self.extremities.iter().map(|(id, _)| id.clone()).collect();
        let mut reference_hashes = HashMap::new();
        if self.rules.events_reference_format == EventsReferenceFormatVersion::V1 {
            for id in prev_events.iter().chain(&auth_events) {
                let json =
                    tx.event_pdu(id.as_str()).await?.ok_or_else(|| RequestError::Internal(format!("{id} missing")))?;
                let object: CanonicalJsonObject = serde_json::from_str(&json)?;
                let hash = reference_hash(&object, &self.rules).map_err(|e| RequestError::Internal(e.to_string()))?;
                reference_hashes.insert(id.clone(), hash);
            }
        }
        Ok(Position { auth_events, create, depth, prev_events, reference_hashes })
    }

    /// The `/make_join` or `/make_leave` template for remote user `user`
    /// (`content`'s membership is `join` or `leave`): every field this server
    /// chooses, none that the user's server signs (origin, time, hashes,
    /// signatures). Refused when the current state would not allow the
    /// event, so that the user's server learns it before signing.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_joinroomiduserid> and
    /// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_leaveroomiduserid>
    pub async fn membership_template(
        &mut self,
        tx: &mut Tx,
        user: &UserId,
        content: Value,
    ) -> Result<Value, RequestError> {
        let membership = content["membership"].as_str().unwrap_or_default().to_owned();
        let Position { auth_events, depth, prev_events, reference_hashes, .. } =
            self.position(tx, user, "m.room.member", Some(user.as_str()), &content).await?;
        let template = json!({
            "type": "m.room.member",
            "sender": user,
            "state_key": user,
            "room_id": self.room_id,
            "content": content,
            "prev_events": cite(&self.rules, &prev_events, &reference_hashes),
            "auth_events": cite(&self.rules, &auth_events, &reference_hashes),
            "depth": depth,
        });
        // The fields the auth rules read, with a stand-in id and time.
        let mut probe = template.clone();
        probe["origin_server_ts"] = json!(0);
        let pdu = Pdu::parse(EventId::parse("$template").expect("valid event id"), &probe.to_string())?;
        let state = &self.state;
        check_state_dependent_auth_rules(&self.rules.authorization, &pdu, |kind: &StateEventType, key| {
            state.get(&(kind.to_string(), key.to_owned())).and_then(Option::as_ref)
        })
        .map_err(|reason| RequestError::Forbidden(format!("{user} may not {membership} {}: {reason}", self.room_id)))?;
        Ok(template)
    }

    /// The rules of the room's version.
    pub fn rules(&self) -> &RoomVersionRules {
        &self.rules
    }

    /// The room's latest event (its deepest forward extremity).
    pub fn latest_event(&self) -> Option<&EventId> {
        self.extremities.iter().max_by_key(|(_, depth)| *depth).map(|(id, _)| &**id)
    }

    /// The sender and content of the current state event at `(event_type, state_key)`.
    pub async fn current_state(
        &mut self,
        tx: &mut Tx,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<(OwnedUserId, Value)>, RequestError> {
        match self.state_event(tx, event_type, state_key).await? {
            Some(pdu) => Ok(Some((pdu.sender.clone(), serde_json::from_str(pdu.content.get())?))),
            None => Ok(None),
        }
    }

    /// The current state event at `(event_type, state_key)`, read once per request.
    async fn state_event(
        &mut self,
        tx: &mut Tx,
        event_type: &str,
        state_key: &str,
    ) -> Result<Option<&Pdu>, RequestError> {
        let key = (event_type.to_owned(), state_key.to_owned());
        if !self.state.contains_key(&key) {
            let found = match tx.current_state_event(self.room_id.as_str(), event_type, state_key).await? {
                Some((id, json)) => {
                    let id = OwnedEventId::try_from(id).map_err(|e| RequestError::Internal(e.to_string()))?;
                    Some(Pdu::parse(id, &json)?)
                }
                None => None,
            };
            self.state.insert(key.clone(), found);
        }
        Ok(self.state[&key].as_ref())
    }

    /// Store an accepted event: the event with its state-before snapshot, a
    /// new snapshot and current state when it is a state event, memberships,
    /// and the forward extremities it replaces.
    async fn persist(
        &mut self,
        tx: &mut Tx,
        event_id: OwnedEventId,
        json: String,
        pdu: Pdu,
        depth: i64,
    ) -> Result<Accepted, RequestError> {
        let room_id = self.room_id.as_str();
        let event_type = pdu.event_type.to_string();
        let state_before = self.snapshot;
        let is_state = pdu.state_key.is_some();
        if let Some(state_key) = &pdu.state_key {
            let change = StateMap::from([((event_type.clone(), state_key.clone()), event_id.to_string())]);
            let snapshot = append_state(tx, room_id, self.snapshot, &change).await?;
            tx.set_current_snapshot(room_id, snapshot).await?;
            tx.set_current_state(room_id, &event_type, state_key, event_id.as_str()).await?;
            if pdu.event_type == TimelineEventType::RoomMember {
                let membership = serde_json::from_str::<Value>(pdu.content.get())?
                    .get("membership")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| RequestError::Internal("accepted member event without membership".into()))?;
                tx.set_membership(room_id, state_key, &membership, event_id.as_str()).await?;
            }
            self.snapshot = Some(snapshot);
        }
        tx.insert_event(&NewEvent {
            event_id: event_id.as_str(),
            room_id,
            event_type: &event_type,
            state_key: pdu.state_key.as_deref(),
            depth,
            state_before,
            state_after: self.snapshot,
            status: EventStatus::Accepted,
            pdu: &json,
            origin_server_ts: i64::from(pdu.origin_server_ts.get()),
            auth_events: Some(&pdu.auth_events),
        })
        .await?;
        let prev_events: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
        tx.advance_extremities(room_id, &prev_events, event_id.as_str()).await?;
        if let Some(state_key) = &pdu.state_key {
            self.state.insert((event_type, state_key.clone()), Some(pdu));
        }
        self.extremities.retain(|(id, _)| !prev_events.iter().any(|prev| prev == id.as_str()));
        self.extremities.push((event_id.clone(), depth));
        let event = StoredEvent { event_id, room_id: self.room_id.clone(), pdu: serde_json::from_str(&json)? };
        Ok(Accepted { event, is_state })
    }
}
