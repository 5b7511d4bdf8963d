//! PDUs from another server through the validation pipeline: a fake
//! "remote.test:8448" signs PDUs with its own key and serves that key by
//! answering the room server's key queries on the bus.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder, Shutdown, ShutdownTrigger};
use myelin_roomserver::api::*;
use myelin_storage::{sqlx, with_db};
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, MatrixError};
use ruma::signatures::{hash_and_sign_event, reference_hash};
use ruma::{CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Value, json};

use super::{Harness, each_backend, public_room, user};

const REMOTE: &str = "remote.test:8448";

fn remote_user(name: &str) -> OwnedUserId {
    format!("@{name}:{REMOTE}").try_into().unwrap()
}

/// The fake remote server's side of the bus: it answers key queries with
/// its key, valid until whatever the test sets.
struct Peer {
    key: ServerSigningKey,
    valid_until_ts: Mutex<u64>,
    /// Events it serves to `/event`, `/get_missing_events` and `/backfill`, by id.
    events: Mutex<Vec<(String, Value)>>,
    /// Events it serves to `/event` only.
    by_id: Mutex<Vec<(String, Value)>>,
    /// Its `/state_ids` answers: the ids of the state before an event.
    states: Mutex<Vec<(String, Vec<String>)>>,
}

#[async_trait]
impl Responder for Peer {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let query: FederationQuery = record.json().map_err(|e| HandleError::Poison(e.to_string()))?;
        let reply: FederationQueryReply = match query {
            FederationQuery::ServerKeys { server_name, .. } if server_name.as_str() == REMOTE => {
                Ok(FederationQueryOk::ServerKeys {
                    keys: vec![VerifyKey {
                        key_id: self.key.key_id(),
                        public_key: self.key.public_key_base64(),
                        valid_until_ts: Some(*self.valid_until_ts.lock().unwrap()),
                        expired_ts: None,
                    }],
                })
            }
            FederationQuery::Events { event_ids, .. } => {
                let (events, by_id) = (self.events.lock().unwrap(), self.by_id.lock().unwrap());
                let pdus =
                    events.iter().chain(by_id.iter()).filter(|(id, _)| event_ids.iter().any(|e| e.as_str() == id));
                Ok(FederationQueryOk::Pdus { pdus: pdus.map(|(_, pdu)| pdu.clone()).collect() })
            }
            FederationQuery::StateIds { event_id, .. } => {
                let states = self.states.lock().unwrap();
                match states.iter().find(|(at, _)| at == event_id.as_str()) {
                    Some((_, ids)) => Ok(FederationQueryOk::StateIds {
                        pdu_ids: ids.iter().map(|id| id.as_str().try_into().unwrap()).collect(),
                        auth_chain_ids: Vec::new(),
                    }),
                    None => Err(MatrixError::new(ErrorCode::NotFound, "no state known there")),
                }
            }
            FederationQuery::MissingEvents { .. } | FederationQuery::Backfill { .. } => {
                let events = self.events.lock().unwrap();
                Ok(FederationQueryOk::Pdus { pdus: events.iter().map(|(_, pdu)| pdu.clone()).collect() })
            }
            _ => Err(MatrixError::new(ErrorCode::NotFound, "unknown to the fake peer")),
        };
        Ok(serde_json::to_vec(&reply).unwrap())
    }
}

/// A room as the remote server sees it: the ids it needs for auth events
/// and the latest event to build on.
struct RemoteView {
    room_id: OwnedRoomId,
    version: RoomVersionId,
    peer: Arc<Peer>,
    _stop: ShutdownTrigger,
    /// Latest event id and its depth.
    tip: (String, i64),
    create: String,
    power_levels: String,
    join_rules: String,
}

impl RemoteView {
    /// Serve the peer's keys and look at a local room's state.
    async fn start(h: &Harness, room_id: &OwnedRoomId, version: RoomVersionId) -> Self {
        let key = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
        let peer = Arc::new(Peer {
            key,
            valid_until_ts: Mutex::new(u64::MAX / 2),
            events: Mutex::default(),
            by_id: Mutex::default(),
            states: Mutex::default(),
        });
        let (stop, shutdown): (ShutdownTrigger, Shutdown) = Shutdown::new();
        h.bus.serve(&format!("test.peer.{room_id}"), FEDERATION_QUERY_TOPIC, peer.clone(), shutdown);
        let mut view = Self {
            room_id: room_id.clone(),
            version,
            peer,
            _stop: stop,
            tip: (String::new(), 0),
            create: String::new(),
            power_levels: String::new(),
            join_rules: String::new(),
        };
        view.refresh(h).await;
        view
    }

    /// Follow the room's current state and its latest output event.
    async fn refresh(&mut self, h: &Harness) {
        let state = h.state(&self.room_id, &user("alice"), None, None).await.unwrap();
        let id_of = |kind: &str| {
            state.iter().find(|e| e.pdu["type"] == kind).map(|e| e.event_id.to_string()).unwrap_or_default()
        };
        self.create = id_of("m.room.create");
        self.power_levels = id_of("m.room.power_levels");
        self.join_rules = id_of("m.room.join_rules");
        // The tip is the last output once every current state event has arrived.
        let last = loop {
            let outputs = h.room_outputs(&self.room_id);
            let arrived = state.iter().all(|e| outputs.iter().any(|o| o.event.event_id == e.event_id));
            if arrived && let Some(last) = outputs.last().cloned() {
                break last;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        self.tip = (last.event.event_id.to_string(), last.event.pdu["depth"].as_i64().unwrap());
    }

    /// A power levels `users` map giving `powers`, and alice (the room's
    /// creator) 100 where the room version lists creators there.
    fn users_with_power(&self, powers: &[(&OwnedUserId, i64)]) -> Value {
        let mut users = serde_json::Map::new();
        if self.version != RoomVersionId::V12 {
            users.insert(user("alice").to_string(), json!(100));
        }
        users.extend(powers.iter().map(|(user, power)| (user.to_string(), json!(power))));
        Value::Object(users)
    }

    /// The create event as an auth event, where the room version lists it.
    fn with_create(&self, mut auth: Vec<String>) -> Vec<String> {
        if self.version != RoomVersionId::V12 {
            auth.insert(0, self.create.clone());
        }
        auth
    }

    /// A signed PDU from `sender` on top of `prev` (the tip by default).
    fn pdu(&self, fields: Value) -> (String, Value) {
        let mut fields = fields;
        let object = fields.as_object_mut().unwrap();
        object.entry("room_id").or_insert(json!(self.room_id));
        object.entry("prev_events").or_insert(json!([self.tip.0]));
        object.entry("depth").or_insert(json!(self.tip.1 + 1));
        object.entry("origin_server_ts").or_insert(json!(now()));
        object.entry("content").or_insert(json!({}));
        object.entry("origin").or_insert(json!(REMOTE));
        sign(&self.peer.key, REMOTE, &self.version, fields)
    }

    fn message(&self, sender: &OwnedUserId, auth: Vec<String>, body: &str) -> (String, Value) {
        self.pdu(json!({
            "type": "m.room.message",
            "sender": sender,
            "content": {"msgtype": "m.text", "body": body},
            "auth_events": self.with_create(auth),
        }))
    }

    fn join(&self, joiner: &OwnedUserId) -> (String, Value) {
        self.pdu(json!({
            "type": "m.room.member",
            "state_key": joiner,
            "sender": joiner,
            "content": {"membership": "join"},
            "auth_events": self.with_create(vec![self.power_levels.clone(), self.join_rules.clone()]),
        }))
    }

    async fn send(&self, h: &Harness, kind: PduKind, pdus: Vec<Value>) -> Vec<PduResult> {
        let request = InputPdus { origin: REMOTE.try_into().unwrap(), room_id: self.room_id.clone(), kind, pdus };
        match h.input(self.room_id.as_str(), InputRequest::InputPdus(request)).await.unwrap() {
            InputOk::PdusProcessed { results } => results,
            other => panic!("unexpected reply {other:?}"),
        }
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Hash and sign `fields` as `server` would, and compute the event id.
fn sign(key: &ServerSigningKey, server: &str, version: &RoomVersionId, fields: Value) -> (String, Value) {
    let rules = version.rules().unwrap();
    let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(fields).unwrap() else { panic!() };
    hash_and_sign_event(server, &key.keypair, &mut object, &rules.redaction).unwrap();
    let id = format!("${}", reference_hash(&object, &rules).unwrap());
    (id, serde_json::to_value(&object).unwrap())
}

/// `pdu` signed again, under the peer's key id, with another key: the same
/// event id, a forged signature.
fn forge(peer: &ServerSigningKey, version: &RoomVersionId, pdu: Value) -> (String, Value) {
    let seed = ServerSigningKey::generate_file_contents().split_whitespace().nth(2).unwrap().to_owned();
    let impostor = ServerSigningKey::parse(&format!("ed25519 {} {seed}", peer.keypair.version())).unwrap();
    let mut unsigned = pdu;
    unsigned.as_object_mut().unwrap().remove("signatures");
    unsigned.as_object_mut().unwrap().remove("hashes");
    sign(&impostor, REMOTE, version, unsigned)
}

fn accepted(results: &[PduResult], index: usize, id: &str) {
    assert_eq!(results[index].event_id.as_ref().map(|e| e.as_str()), Some(id), "{results:?}");
    assert_eq!(results[index].outcome, PduOutcome::Accepted, "{results:?}");
}

/// Rejected, for a reason that mentions `because`.
fn rejected(results: &[PduResult], index: usize, because: &str) {
    match &results[index].outcome {
        PduOutcome::Rejected { reason } => assert!(reason.contains(because), "{because:?} not in {reason:?}"),
        other => panic!("expected a rejection ({because}), got {other:?}"),
    }
}

/// A public room of alice's with bob from the remote server joined.
async fn joined_room(h: &Harness, version: RoomVersionId) -> (RemoteView, String) {
    let alice = user("alice");
    let request = CreateRoom { room_version: Some(version.to_string()), ..public_room(&alice) };
    let room_id = h.create(request).await.unwrap();
    let mut view = RemoteView::start(h, &room_id, version).await;
    let bob = remote_user("bob");
    let (join, pdu) = view.join(&bob);
    let results = view.send(h, PduKind::Timeline, vec![pdu]).await;
    accepted(&results, 0, &join);
    let outputs = h.outputs_until(&room_id, &join).await;
    let added: Vec<&str> = outputs.last().unwrap().state_delta.added.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(added, [join.as_str()], "the join enters the current state");
    view.refresh(h).await;
    (view, join)
}

#[tokio::test]
async fn malformed_and_forged_pdus_fail_alone() {
    each_backend(|h| async move {
        let bob = remote_user("bob");
        let (mut view, bob_join) = joined_room(&h, RoomVersionId::V10).await;
        let mut count = 0;
        // Each bad PDU travels with a valid message, which must get through.
        let mut check = async |view: &mut RemoteView, bad: Value, what: &str| {
            count += 1;
            let (good, good_pdu) =
                view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], &format!("ok {count}"));
            let results = view.send(&h, PduKind::Timeline, vec![bad, good_pdu]).await;
            rejected(&results, 0, what);
            accepted(&results, 1, &good);
            h.outputs_until(&view.room_id, &good).await;
            view.refresh(&h).await;
        };
        let auth = vec![view.power_levels.clone(), bob_join.clone()];
        let (_, base) = view.message(&bob, auth.clone(), "bad");

        let fake_ids: Vec<String> = (0..21).map(|i| format!("${i:0>43}")).collect();
        let (_, many_prev) = view.pdu(json!({"type": "m.room.message", "sender": bob, "prev_events": fake_ids,
            "auth_events": view.with_create(auth.clone())}));
        check(&mut view, many_prev, "prev_events").await;

        let (_, many_auth) =
            view.pdu(json!({"type": "m.room.message", "sender": bob, "auth_events": fake_ids[..11].to_vec()}));
        check(&mut view, many_auth, "auth_events").await;

        let mut deep = base.clone();
        deep["depth"] = json!(1u64 << 53);
        check(&mut view, deep, "canonical JSON").await;

        let mut float = base.clone();
        float["content"]["weight"] = json!(1.5);
        check(&mut view, float, "canonical JSON").await;

        let mut huge = base.clone();
        huge["content"]["body"] = json!("");
        let size = serde_json::to_string(&CanonicalJsonValue::try_from(huge.clone()).unwrap()).unwrap().len();
        huge["content"]["body"] = json!("x".repeat(65_537 - size));
        assert_eq!(serde_json::to_string(&CanonicalJsonValue::try_from(huge.clone()).unwrap()).unwrap().len(), 65_537);
        check(&mut view, huge, "larger than 65536").await;

        let (_, long_key) = view.pdu(json!({"type": "m.custom", "sender": bob, "state_key": "k".repeat(256),
            "auth_events": view.with_create(auth.clone())}));
        check(&mut view, long_key, "state_key is longer").await;

        let (_, forged) = forge(&view.peer.key, &view.version, base.clone());
        check(&mut view, forged, "signature").await;

        let mut elsewhere = base.clone();
        elsewhere["room_id"] = json!(format!("!other:{REMOTE}"));
        check(&mut view, elsewhere, "not in room").await;

        // A content hash mismatch redacts: the create event below loses its
        // room version (v10 keeps only `creator`) and cannot stand.
        let (_, mut second_create) = view.pdu(json!({"type": "m.room.create", "state_key": "", "sender": bob,
            "prev_events": [], "auth_events": [], "depth": 1, "content": {"creator": bob, "room_version": "10"}}));
        second_create["content"]["extra"] = json!("tampered");
        check(&mut view, second_create, "create event").await;
        // The room's own create event, tampered, is the same event: already known.
        let mut own_create =
            h.state(&view.room_id, &user("alice"), Some("m.room.create"), Some("")).await.unwrap()[0].pdu.clone();
        own_create["content"]["extra"] = json!("tampered");
        let results = view.send(&h, PduKind::Timeline, vec![own_create]).await;
        assert_eq!(results[0].outcome, PduOutcome::AlreadyKnown);
        assert_eq!(results[0].event_id.as_ref().unwrap().as_str(), view.create);

        // Auth events from another room.
        let other_room = h.create(public_room(&user("alice"))).await.unwrap();
        let other_power = h.state(&other_room, &user("alice"), Some("m.room.power_levels"), Some("")).await.unwrap()[0]
            .event_id
            .to_string();
        let (_, foreign) = view.message(&bob, vec![other_power, bob_join.clone()], "foreign auth");
        check(&mut view, foreign, "not in the same room").await;

        // A power grab is rejected and remembered; what builds on it is rejected too.
        let (grab, grab_pdu) = view.pdu(json!({"type": "m.room.power_levels", "state_key": "", "sender": bob,
            "content": {"users": {bob.as_str(): 100}}, "auth_events": view.with_create(auth.clone())}));
        check(&mut view, grab_pdu.clone(), "auth events").await;
        let (_, child) = view.pdu(json!({"type": "m.room.message", "sender": bob, "prev_events": [grab],
            "auth_events": view.with_create(auth.clone())}));
        check(&mut view, child, "was rejected").await;
        let again = view.send(&h, PduKind::Timeline, vec![grab_pdu]).await;
        rejected(&again, 0, "auth events");

        // Nothing bad reached the output topic.
        let outputs = h.room_outputs(&view.room_id);
        let bodies: Vec<&str> = outputs.iter().filter_map(|o| o.event.pdu["content"]["body"].as_str()).collect();
        assert!(bodies.iter().all(|body| body.starts_with("ok ")), "{bodies:?}");
        assert_eq!(bodies.len(), 12);
    })
    .await;
}

#[tokio::test]
async fn key_validity_is_enforced_from_room_version_5() {
    each_backend(|h| async move {
        let bob = remote_user("bob");
        for (version, enforced) in [(RoomVersionId::V4, false), (RoomVersionId::V5, true), (RoomVersionId::V10, true)] {
            let (view, join) = joined_room(&h, version.clone()).await;
            let valid_until = now() - 30_000;
            *view.peer.valid_until_ts.lock().unwrap() = valid_until;
            let auth = vec![view.power_levels.clone(), join.clone()];
            let (early, early_pdu) = view.pdu(json!({"type": "m.room.message", "sender": bob,
                "content": {"body": "early"}, "auth_events": view.with_create(auth.clone()),
                "origin_server_ts": valid_until - 1}));
            let (late, late_pdu) = view.message(&bob, auth, "late");
            let results = view.send(&h, PduKind::Timeline, vec![early_pdu, late_pdu]).await;
            accepted(&results, 0, &early);
            if enforced {
                rejected(&results, 1, "signature");
                assert_eq!(results[1].event_id.as_ref().unwrap().as_str(), late);
            } else {
                accepted(&results, 1, &late);
            }
        }
    })
    .await;
}

/// A v11 room of alice's that remote bob joined, then remote carol, whom
/// alice gave her own power (alice's change not yet in `view`); the view,
/// bob's join and carol's.
async fn carol_moderates(h: &Harness, version: RoomVersionId) -> (RemoteView, String, String) {
    let carol = remote_user("carol");
    let (view, bob_join) = joined_room(h, version).await;
    let (carol_join, pdu) = view.join(&carol);
    accepted(&view.send(h, PduKind::Timeline, vec![pdu]).await, 0, &carol_join);
    let levels = json!({"users": view.users_with_power(&[(&carol, 100)])});
    h.send(&view.room_id, &user("alice"), "m.room.power_levels", Some(""), levels, None).await.unwrap();
    (view, bob_join, carol_join)
}

#[tokio::test]
async fn soft_failure_and_forks() {
    each_backend(|h| async move {
        let (alice, bob, carol) = (user("alice"), remote_user("bob"), remote_user("carol"));
        let (mut view, bob_join, carol_join) = carol_moderates(&h, RoomVersionId::V11).await;
        view.refresh(&h).await;
        let before_ban = view.tip.clone();

        // Alice bans bob; bob, unaware, sends from the state before the ban.
        let ban = h
            .send(&view.room_id, &alice, "m.room.member", Some(bob.as_str()), json!({"membership": "ban"}), None)
            .await
            .unwrap();
        h.outputs_until(&view.room_id, &ban).await;
        let (late, late_pdu) = view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], "after ban");
        let (fine, fine_pdu) = view.message(&carol, vec![view.power_levels.clone(), carol_join.clone()], "carol");
        let results = view.send(&h, PduKind::Timeline, vec![late_pdu, fine_pdu]).await;
        assert!(matches!(results[0].outcome, PduOutcome::SoftFailed { .. }), "{results:?}");
        assert_eq!(results[0].event_id.as_ref().unwrap().as_str(), late);
        accepted(&results, 1, &fine);
        let outputs = h.outputs_until(&view.room_id, &fine).await;
        assert!(outputs.iter().all(|o| o.event.event_id.as_str() != late), "soft-failed events are not emitted");
        let next = h.message(&view.room_id, &alice, "next").await.unwrap();
        let outputs = h.outputs_until(&view.room_id, &next).await;
        assert!(
            !outputs.last().unwrap().event.pdu["prev_events"].as_array().unwrap().iter().any(|p| p == late.as_str()),
            "a soft-failed event is not a forward extremity"
        );

        // Carol changes the topic on an old fork from before the ban: her
        // topic wins, the ban stays.
        view.tip = before_ban;
        let (topic, topic_pdu) = view.pdu(json!({"type": "m.room.topic", "state_key": "", "sender": carol,
            "content": {"topic": "from the old fork"},
            "auth_events": [view.create, view.power_levels, carol_join]}));
        accepted(&view.send(&h, PduKind::Timeline, vec![topic_pdu]).await, 0, &topic);
        let outputs = h.outputs_until(&view.room_id, &topic).await;
        let delta = &outputs.last().unwrap().state_delta;
        let added: Vec<&str> = delta.added.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(added, [topic.as_str()], "only the topic changes");
        assert!(delta.removed.is_empty());
        let member = h.state(&view.room_id, &alice, Some("m.room.member"), Some(bob.as_str())).await.unwrap();
        assert_eq!(member[0].event_id.as_str(), ban, "the old fork does not undo the ban");
        let current = h.state(&view.room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap();
        assert_eq!(current[0].pdu["content"]["topic"], "from the old fork");
        // Both forks are extremities: the next local event joins them.
        let merge = h.message(&view.room_id, &alice, "merge").await.unwrap();
        let outputs = h.outputs_until(&view.room_id, &merge).await;
        assert_eq!(outputs.last().unwrap().event.pdu["prev_events"].as_array().unwrap().len(), 2);

        // Two concurrent topic changes: the later one wins whatever the arrival order.
        view.refresh(&h).await;
        let (t1, t1_pdu) = view.pdu(json!({"type": "m.room.topic", "state_key": "", "sender": carol,
            "content": {"topic": "first"}, "origin_server_ts": now() - 1000,
            "auth_events": [view.create, view.power_levels, carol_join]}));
        let (t2, t2_pdu) = view.pdu(json!({"type": "m.room.topic", "state_key": "", "sender": carol,
            "content": {"topic": "second"}, "origin_server_ts": now(),
            "auth_events": [view.create, view.power_levels, carol_join]}));
        accepted(&view.send(&h, PduKind::Timeline, vec![t2_pdu]).await, 0, &t2);
        accepted(&view.send(&h, PduKind::Timeline, vec![t1_pdu]).await, 0, &t1);
        let outputs = h.outputs_until(&view.room_id, &t1).await;
        assert!(outputs.last().unwrap().state_delta.added.is_empty(), "the older topic does not win");
        let current = h.state(&view.room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap();
        assert_eq!(current[0].event_id.as_str(), t2);

        // A remote event merging both forks, and one on top of it: each is
        // checked against the resolved state it stands on.
        let auth = vec![view.power_levels.clone(), carol_join.clone()];
        let (merged, merged_pdu) = view.pdu(json!({"type": "m.room.message", "sender": carol,
            "content": {"body": "merged"}, "prev_events": [t1, t2], "auth_events": view.with_create(auth.clone())}));
        view.tip = (merged.clone(), view.tip.1 + 2);
        let (on_top, on_top_pdu) = view.message(&carol, auth, "on top");
        let results = view.send(&h, PduKind::Timeline, vec![merged_pdu, on_top_pdu]).await;
        accepted(&results, 0, &merged);
        accepted(&results, 1, &on_top);
        let next = h.message(&view.room_id, &alice, "after the merge").await.unwrap();
        let outputs = h.outputs_until(&view.room_id, &next).await;
        assert_eq!(outputs.last().unwrap().event.pdu["prev_events"], json!([on_top]));
        let current = h.state(&view.room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap();
        assert_eq!(current[0].event_id.as_str(), t2);
    })
    .await;
}

#[tokio::test]
async fn missing_prev_events_are_fetched_or_the_event_kept_aside() {
    each_backend(|h| async move {
        let bob = remote_user("bob");
        let (mut view, join) = joined_room(&h, RoomVersionId::V12).await;
        let auth = vec![view.power_levels.clone(), join.clone()];
        let (gap, gap_pdu) = view.message(&bob, auth.clone(), "in the gap");
        view.tip = (gap.clone(), view.tip.1 + 1);
        let (after, after_pdu) = view.message(&bob, auth.clone(), "after the gap");
        // Without the peer's help the event cannot be placed: kept aside.
        let results = view.send(&h, PduKind::Timeline, vec![after_pdu.clone()]).await;
        assert!(matches!(results[0].outcome, PduOutcome::SoftFailed { .. }), "{results:?}");
        assert_eq!(h.room_outputs(&view.room_id).iter().filter(|o| o.event.event_id.as_str() == after).count(), 0);

        // With /get_missing_events answered, the gap is filled first.
        view.peer.events.lock().unwrap().push((gap.clone(), gap_pdu));
        view.tip = (gap.clone(), view.tip.1 + 1);
        let (next, next_pdu) = view.message(&bob, auth, "next");
        let results = view.send(&h, PduKind::Timeline, vec![next_pdu]).await;
        accepted(&results, 0, &next);
        let outputs = h.outputs_until(&view.room_id, &next).await;
        let ids: Vec<&str> = outputs.iter().map(|o| o.event.event_id.as_str()).collect();
        assert_eq!(&ids[ids.len() - 2..], [gap.as_str(), next.as_str()]);
    })
    .await;
}

#[tokio::test]
async fn backfilled_events_are_historical() {
    each_backend(|h| async move {
        let bob = remote_user("bob");
        let (view, join) = joined_room(&h, RoomVersionId::V11).await;
        let (old, old_pdu) = view.message(&bob, vec![view.power_levels.clone(), join.clone()], "history");
        accepted(&view.send(&h, PduKind::Backfill, vec![old_pdu]).await, 0, &old);
        let outputs = h.outputs_until(&view.room_id, &old).await;
        assert!(outputs.last().unwrap().historical);
        assert!(outputs.last().unwrap().state_delta.added.is_empty());
        // An outlier is stored and never emitted.
        let (outlier, outlier_pdu) = view.message(&bob, vec![view.power_levels.clone(), join], "outlier");
        accepted(&view.send(&h, PduKind::Outlier, vec![outlier_pdu.clone()]).await, 0, &outlier);
        let again = view.send(&h, PduKind::Outlier, vec![outlier_pdu]).await;
        assert_eq!(again[0].outcome, PduOutcome::AlreadyKnown);
        let marker = h.message(&view.room_id, &user("alice"), "marker").await.unwrap();
        let outputs = h.outputs_until(&view.room_id, &marker).await;
        assert!(outputs.iter().all(|o| o.event.event_id.as_str() != outlier));
        let prevs = outputs.last().unwrap().event.pdu["prev_events"].clone();
        assert!(!prevs.as_array().unwrap().iter().any(|p| p == outlier.as_str() || p == old.as_str()));
    })
    .await;
}

/// A room that only the remote server is in, and this server's join to it.
fn remote_room(peer: &ServerSigningKey, version: &RoomVersionId, room_id: &str) -> (Vec<(String, Value)>, Value) {
    let bob = remote_user("bob");
    let v12 = *version == RoomVersionId::V12;
    let mut events: Vec<(String, Value)> = Vec::new();
    let mut create_content = json!({"room_version": version});
    if !v12 {
        create_content["creator"] = json!(bob);
    }
    let mut create = json!({"type": "m.room.create", "state_key": "", "sender": bob, "content": create_content,
        "prev_events": [], "auth_events": [], "depth": 1, "origin_server_ts": now(), "origin": REMOTE});
    if !v12 {
        create["room_id"] = json!(room_id);
    }
    events.push(sign(peer, REMOTE, version, create));
    let room_id = if v12 { format!("!{}", &events[0].0[1..]) } else { room_id.to_owned() };
    let create_ref = if v12 { Vec::new() } else { vec![events[0].0.clone()] };
    let add = |events: &mut Vec<(String, Value)>, fields: Value, auth: Vec<String>| {
        let (prev, depth) = (events.last().unwrap().0.clone(), events.len() + 1);
        let mut fields = fields;
        let object = fields.as_object_mut().unwrap();
        object.insert("room_id".into(), json!(room_id));
        object.insert("prev_events".into(), json!([prev]));
        object.insert("depth".into(), json!(depth));
        object.insert("origin_server_ts".into(), json!(now()));
        object.insert("origin".into(), json!(REMOTE));
        object.insert("auth_events".into(), json!([create_ref.clone(), auth].concat()));
        events.push(sign(peer, REMOTE, version, fields));
    };
    add(
        &mut events,
        json!({"type": "m.room.member", "state_key": bob, "sender": bob,
        "content": {"membership": "join"}}),
        vec![],
    );
    let bob_join = events[1].0.clone();
    let mut users = json!({});
    if !v12 {
        users[bob.as_str()] = json!(100);
    }
    add(
        &mut events,
        json!({"type": "m.room.power_levels", "state_key": "", "sender": bob,
        "content": {"users": users}}),
        vec![bob_join.clone()],
    );
    let power = events[2].0.clone();
    add(
        &mut events,
        json!({"type": "m.room.join_rules", "state_key": "", "sender": bob,
        "content": {"join_rule": "public"}}),
        vec![bob_join.clone(), power.clone()],
    );
    let rules = events[3].0.clone();
    let join_auth = [create_ref, vec![power, rules.clone()]].concat();
    let join = json!({"type": "m.room.member", "state_key": user("alice"), "sender": user("alice"),
        "content": {"membership": "join"}, "room_id": room_id, "prev_events": [rules],
        "depth": 5, "origin_server_ts": now(), "origin": super::SERVER,
        "auth_events": join_auth});
    (events, join)
}

/// A `send_join` answer from the remote server: `join` (signed by this
/// server) with `state` and `auth_chain`, for the room the join names.
fn join_answer(version: &RoomVersionId, join: &Value, state: Vec<Value>, auth_chain: Vec<Value>) -> JoinedRemoteRoom {
    JoinedRemoteRoom {
        room_id: join["room_id"].as_str().unwrap().try_into().unwrap(),
        room_version: version.to_string(),
        origin: REMOTE.try_into().unwrap(),
        join_event: join.clone(),
        state,
        auth_chain,
    }
}

#[tokio::test]
async fn rooms_joined_through_another_server_start_from_its_state() {
    each_backend(|h| async move {
        let alice = user("alice");
        for version in [RoomVersionId::V10, RoomVersionId::V12] {
            // The peer only needs to serve keys here.
            let local_room = h.create(public_room(&alice)).await.unwrap();
            let view = RemoteView::start(&h, &local_room, version.clone()).await;
            let (events, join) = remote_room(&view.peer.key, &version, &format!("!joined{version}:{REMOTE}"));
            let (join_id, join) = sign(&h.key, super::SERVER, &version, join);
            let room_id: OwnedRoomId = join["room_id"].as_str().unwrap().try_into().unwrap();
            let state: Vec<Value> = events.iter().map(|(_, pdu)| pdu.clone()).collect();

            // A state without its create event does not start a room.
            let broken = join_answer(&version, &join, state[1..].to_vec(), Vec::new());
            let error = h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(broken)).await.unwrap_err();
            assert_eq!(error.errcode, ErrorCode::Forbidden, "{error:?}");

            let joined = join_answer(&version, &join, state.clone(), state);
            let reply = h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(joined)).await.unwrap();
            assert_eq!(reply, InputOk::EventSent { event_id: join_id.clone().try_into().unwrap() });
            let outputs = h.outputs_until(&room_id, &join_id).await;
            let mut added: Vec<String> =
                outputs.last().unwrap().state_delta.added.iter().map(|e| e.event_id.to_string()).collect();
            added.sort();
            let mut expected: Vec<String> = events.iter().map(|(id, _)| id.clone()).chain([join_id.clone()]).collect();
            expected.sort();
            assert_eq!(added, expected, "the whole state enters with the join");
            assert!(h.joined_rooms(&alice).await.contains(&room_id));
            let members = h.state(&room_id, &alice, Some("m.room.member"), None).await.unwrap();
            assert_eq!(members.len(), 2);
        }
    })
    .await;
}

#[tokio::test]
async fn backfill_asks_the_room_for_older_history_and_drops_forged_events() {
    each_backend(|h| async move {
        let alice = user("alice");
        let bob = remote_user("bob");
        let version = RoomVersionId::V10;
        let local_room = h.create(public_room(&alice)).await.unwrap();
        let view = RemoteView::start(&h, &local_room, version.clone()).await;
        // A room this server created has all its history.
        let reply =
            h.input(local_room.as_str(), InputRequest::Backfill(Backfill { room_id: local_room.clone(), limit: 10 }));
        assert_eq!(reply.await.unwrap(), InputOk::PdusProcessed { results: Vec::new() });

        let (events, join) = remote_room(&view.peer.key, &version, &format!("!backfill:{REMOTE}"));
        let (_, join) = sign(&h.key, super::SERVER, &version, join);
        let room_id: OwnedRoomId = join["room_id"].as_str().unwrap().try_into().unwrap();
        let state: Vec<Value> = events.iter().map(|(_, pdu)| pdu.clone()).collect();
        let joined = join_answer(&version, &join, state.clone(), state);
        h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(joined)).await.unwrap();

        // What the room said before this server joined, one copy forged.
        let history = |key: &ServerSigningKey, body: &str| {
            sign(
                key,
                REMOTE,
                &version,
                json!({"type": "m.room.message", "sender": bob, "content": {"body": body}, "room_id": room_id,
                    "prev_events": [events[3].0], "auth_events": [events[0].0, events[1].0, events[2].0],
                    "depth": 5, "origin_server_ts": now(), "origin": REMOTE}),
            )
        };
        let (good_id, good) = history(&view.peer.key, "before alice");
        let impostor = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).unwrap();
        let (_, forged) = history(&impostor, "forged");
        view.peer.events.lock().unwrap().extend([("forged".to_owned(), forged), (good_id.clone(), good)]);
        let reply = h.input(room_id.as_str(), InputRequest::Backfill(Backfill { room_id: room_id.clone(), limit: 10 }));
        let InputOk::PdusProcessed { results } = reply.await.unwrap() else { panic!("not PDU results") };
        assert_eq!(results.len(), 2, "{results:?}");
        rejected(&results, 0, "signature");
        accepted(&results, 1, &good_id);
        let outputs = h.outputs_until(&room_id, &good_id).await;
        let output = outputs.last().unwrap();
        assert!(output.historical && output.state_delta.added.is_empty(), "{output:?}");
    })
    .await;
}

#[tokio::test]
async fn forged_events_answered_to_get_missing_events_are_not_accepted() {
    each_backend(|h| async move {
        let bob = remote_user("bob");
        let (mut view, join) = joined_room(&h, RoomVersionId::V12).await;
        let auth = vec![view.power_levels.clone(), join.clone()];
        let tip = view.tip.clone();
        // Two events this server missed on the same parent, one forged,
        // and an event on top of each.
        let (gap, gap_pdu) = view.message(&bob, auth.clone(), "good gap");
        let (forged_gap, forged_gap_pdu) =
            forge(&view.peer.key, &view.version, view.message(&bob, auth.clone(), "forged gap").1);
        view.tip = (gap.clone(), tip.1 + 1);
        let (on_good, on_good_pdu) = view.message(&bob, auth.clone(), "on the good gap");
        view.tip = (forged_gap.clone(), tip.1 + 1);
        let (on_forged, on_forged_pdu) = view.message(&bob, auth, "on the forged gap");
        view.peer.events.lock().unwrap().extend([(forged_gap.clone(), forged_gap_pdu), (gap.clone(), gap_pdu)]);

        let results = view.send(&h, PduKind::Timeline, vec![on_forged_pdu, on_good_pdu]).await;
        // Without its parent, the event on the forged one is only kept aside.
        assert!(
            matches!(&results[0].outcome, PduOutcome::SoftFailed { reason } if reason.contains("missing prev")),
            "{results:?}"
        );
        accepted(&results, 1, &on_good);
        let outputs = h.outputs_until(&view.room_id, &on_good).await;
        let ids: Vec<&str> = outputs.iter().map(|o| o.event.event_id.as_str()).collect();
        assert_eq!(&ids[ids.len() - 2..], [gap.as_str(), on_good.as_str()]);
        assert!(!ids.contains(&forged_gap.as_str()) && !ids.contains(&on_forged.as_str()), "{ids:?}");
        let next = h.message(&view.room_id, &user("alice"), "next").await.unwrap();
        let outputs = h.outputs_until(&view.room_id, &next).await;
        assert_eq!(
            outputs.last().unwrap().event.pdu["prev_events"],
            json!([on_good]),
            "the forged fork is no extremity"
        );
    })
    .await;
}

#[tokio::test]
async fn a_forged_auth_event_answered_to_event_is_not_used() {
    each_backend(|h| async move {
        let (carol, dave) = (remote_user("carol"), remote_user("dave"));
        let (view, _) = joined_room(&h, RoomVersionId::V11).await;
        // History from two users whose joins this server never saw: each
        // message cites its sender's join, which is fetched by id.
        let (carol_join, carol_join_pdu) = view.join(&carol);
        let (_, forged_carol_join) = forge(&view.peer.key, &view.version, carol_join_pdu.clone());
        let (dave_join, dave_join_pdu) = view.join(&dave);
        let said = |sender: &OwnedUserId, join: &str, body: &str| {
            view.pdu(json!({"type": "m.room.message", "sender": sender, "content": {"body": body},
                "prev_events": [join], "depth": view.tip.1 + 2,
                "auth_events": view.with_create(vec![view.power_levels.clone(), join.to_owned()])}))
        };
        let (carol_said, carol_said_pdu) = said(&carol, &carol_join, "carol");
        let (dave_said, dave_said_pdu) = said(&dave, &dave_join, "dave");
        view.peer.events.lock().unwrap().extend([(carol_join.clone(), forged_carol_join), (dave_join, dave_join_pdu)]);

        let results = view.send(&h, PduKind::Backfill, vec![carol_said_pdu.clone(), dave_said_pdu]).await;
        rejected(&results, 0, &format!("auth event {carol_join} is unknown"));
        accepted(&results, 1, &dave_said);
        // The forged copy was not kept: once the real one is served, the message gets in.
        *view.peer.events.lock().unwrap() = vec![(carol_join.clone(), carol_join_pdu)];
        accepted(&view.send(&h, PduKind::Backfill, vec![carol_said_pdu]).await, 0, &carol_said);
    })
    .await;
}

#[tokio::test]
async fn forged_events_in_a_send_join_answer_are_not_used() {
    each_backend(|h| async move {
        let (alice, bob) = (user("alice"), remote_user("bob"));
        let version = RoomVersionId::V10;
        let local_room = h.create(public_room(&alice)).await.unwrap();
        let view = RemoteView::start(&h, &local_room, version.clone()).await;
        let (events, join) = remote_room(&view.peer.key, &version, &format!("!forged:{REMOTE}"));
        let (join_id, join) = sign(&h.key, super::SERVER, &version, join);
        let room_id: OwnedRoomId = join["room_id"].as_str().unwrap().try_into().unwrap();
        let [create, bob_join, power, rules] = [0, 1, 2, 3].map(|i| events[i].clone());
        // Bob has since set a display name, so his join is only in the auth chain.
        let on_rules = |fields: Value| {
            let mut fields = fields;
            let object = fields.as_object_mut().unwrap();
            let mut auth = vec![&create.0, &power.0, &bob_join.0];
            if object["type"] == "m.room.member" {
                auth.push(&rules.0);
            }
            object.insert("auth_events".into(), json!(auth));
            object.insert("room_id".into(), json!(room_id));
            object.insert("prev_events".into(), json!([rules.0]));
            object.insert("depth".into(), json!(5));
            object.insert("origin_server_ts".into(), json!(now()));
            object.insert("origin".into(), json!(REMOTE));
            object.insert("sender".into(), json!(bob));
            sign(&view.peer.key, REMOTE, &version, fields)
        };
        let renamed = on_rules(json!({"type": "m.room.member", "state_key": bob,
            "content": {"membership": "join", "displayname": "Bob"}}));
        let topic = on_rules(json!({"type": "m.room.topic", "state_key": "", "content": {"topic": "forged"}}));
        let (_, forged_topic) = forge(&view.peer.key, &version, topic.1);
        let (_, forged_bob_join) = forge(&view.peer.key, &version, bob_join.1.clone());
        let answer = |state: Vec<Value>, auth_chain: Vec<Value>| join_answer(&version, &join, state, auth_chain);
        let state = vec![create.1.clone(), power.1.clone(), rules.1.clone(), renamed.1.clone()];

        // A forged auth chain event: what it authorises cannot stand, nor can the join.
        let chain = vec![create.1.clone(), forged_bob_join, power.1.clone(), rules.1.clone()];
        let error = h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(answer(state.clone(), chain))).await;
        assert_eq!(error.unwrap_err().errcode, ErrorCode::Forbidden);
        assert!(!h.joined_rooms(&alice).await.contains(&room_id));

        // A forged state event: the room starts without it.
        let chain = vec![create.1.clone(), bob_join.1.clone(), power.1.clone(), rules.1.clone()];
        let with_forged = [state, vec![forged_topic]].concat();
        let reply = h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(answer(with_forged, chain))).await;
        assert_eq!(reply.unwrap(), InputOk::EventSent { event_id: join_id.clone().try_into().unwrap() });
        let outputs = h.outputs_until(&room_id, &join_id).await;
        let mut added: Vec<(String, String)> = outputs
            .last()
            .unwrap()
            .state_delta
            .added
            .iter()
            .map(|e| (e.event_id.to_string(), e.pdu["type"].to_string()))
            .collect();
        added.sort();
        let mut expected = vec![create.0, power.0, rules.0, renamed.0, join_id];
        expected.sort();
        assert_eq!(
            added.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            expected,
            "the state without the forged topic: {added:?}"
        );
        let error = h.state(&room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap_err();
        assert_eq!(error.errcode, ErrorCode::NotFound);
    })
    .await;
}

#[tokio::test]
async fn state_answered_for_a_gap_is_used_without_its_forged_events() {
    each_backend(|h| async move {
        let (alice, bob, carol, dave) = (user("alice"), remote_user("bob"), remote_user("carol"), remote_user("dave"));
        let (mut view, bob_join) = joined_room(&h, RoomVersionId::V12).await;
        let state = h.state(&view.room_id, &alice, None, None).await.unwrap();
        let mut state_ids: Vec<String> = state.iter().map(|e| e.event_id.to_string()).collect();
        // On the remote server Carol and Dave joined (Dave's join arrives
        // forged) and the topic changed (forged too); then Bob said
        // something this server never heard of, and no server tells how
        // it got there: only the state before it.
        let (carol_join, carol_join_pdu) = view.join(&carol);
        let (dave_join, dave_join_pdu) = view.join(&dave);
        let (_, forged_dave_join) = forge(&view.peer.key, &view.version, dave_join_pdu);
        let bob_auth = view.with_create(vec![view.power_levels.clone(), bob_join.clone()]);
        let (topic, topic_pdu) = view.pdu(json!({"type": "m.room.topic", "state_key": "", "sender": bob,
            "content": {"topic": "forged"}, "auth_events": bob_auth}));
        let (_, forged_topic) = forge(&view.peer.key, &view.version, topic_pdu);
        view.tip = (carol_join.clone(), view.tip.1 + 1);
        let (gap, gap_pdu) = view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], "unheard");
        view.tip = (gap.clone(), view.tip.1 + 1);
        let (after, after_pdu) = view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], "after the gap");
        let (_, from_dave_pdu) = view.message(&dave, vec![view.power_levels.clone(), dave_join.clone()], "dave");
        state_ids.extend([carol_join.clone(), dave_join.clone(), topic.clone()]);
        view.peer.states.lock().unwrap().push((gap.clone(), state_ids));
        view.peer.by_id.lock().unwrap().extend([
            (carol_join.clone(), carol_join_pdu),
            (dave_join.clone(), forged_dave_join),
            (topic.clone(), forged_topic),
            (gap.clone(), gap_pdu),
        ]);

        let results = view.send(&h, PduKind::Timeline, vec![after_pdu, from_dave_pdu]).await;
        accepted(&results, 0, &after);
        rejected(&results, 1, &format!("auth event {dave_join} is unknown"));
        let outputs = h.outputs_until(&view.room_id, &after).await;
        let added: Vec<&str> = outputs.last().unwrap().state_delta.added.iter().map(|e| e.event_id.as_str()).collect();
        assert_eq!(added, [carol_join.as_str()], "the state before the event, without what was forged");
        let member = h.state(&view.room_id, &alice, Some("m.room.member"), Some(carol.as_str())).await.unwrap();
        assert_eq!(member[0].event_id.as_str(), carol_join);
        for (kind, key) in [("m.room.member", dave.as_str()), ("m.room.topic", "")] {
            let error = h.state(&view.room_id, &alice, Some(kind), Some(key)).await.unwrap_err();
            assert_eq!(error.errcode, ErrorCode::NotFound, "no {kind} {key}");
        }
        // Neither the gap event nor anything forged is in the timeline.
        assert!(
            outputs
                .iter()
                .all(|o| ![gap.as_str(), topic.as_str(), dave_join.as_str()].contains(&o.event.event_id.as_str()))
        );

        // A state answer naming another room's event is not used: the
        // event on that gap is only kept aside.
        view.tip = (after.clone(), view.tip.1 + 1);
        let other_room = h.create(public_room(&alice)).await.unwrap();
        let other_power =
            h.state(&other_room, &alice, Some("m.room.power_levels"), Some("")).await.unwrap()[0].event_id.to_string();
        let mut state_ids: Vec<String> = h
            .state(&view.room_id, &alice, None, None)
            .await
            .unwrap()
            .iter()
            .filter(|e| e.pdu["type"] != "m.room.power_levels")
            .map(|e| e.event_id.to_string())
            .collect();
        state_ids.push(other_power);
        let (gap, gap_pdu) = view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], "another gap");
        view.tip = (gap.clone(), view.tip.1 + 1);
        let (_, on_top) = view.message(&bob, vec![view.power_levels.clone(), bob_join], "on another gap");
        view.peer.states.lock().unwrap().push((gap.clone(), state_ids));
        view.peer.by_id.lock().unwrap().push((gap, gap_pdu));
        let results = view.send(&h, PduKind::Timeline, vec![on_top]).await;
        assert!(
            matches!(&results[0].outcome, PduOutcome::SoftFailed { reason } if reason.contains("missing prev")),
            "{results:?}"
        );
    })
    .await;
}

/// Forks from another server leave many forward extremities; local events
/// cite at most 20 of them each, so a few local events bring the room back
/// to one, and concurrent local senders never add any.
#[tokio::test]
async fn forward_extremities_are_cited_at_most_20_at_a_time_and_never_grow_locally() {
    each_backend(|h| async move {
        let (alice, bob) = (user("alice"), remote_user("bob"));
        let (view, bob_join) = joined_room(&h, RoomVersionId::V11).await;
        let extremities = "SELECT COUNT(*) FROM roomserver_forward_extremities";
        let before = h.count(extremities).await;
        let forks: Vec<(String, Value)> = (0..25)
            .map(|i| view.message(&bob, vec![view.power_levels.clone(), bob_join.clone()], &format!("fork {i}")))
            .collect();
        let results = view.send(&h, PduKind::Timeline, forks.iter().map(|(_, pdu)| pdu.clone()).collect()).await;
        for (i, (id, _)) in forks.iter().enumerate() {
            accepted(&results, i, id);
        }
        assert_eq!(h.count(extremities).await, before + 24, "25 forks replace the one tip they stand on");

        let prev_count = async |body: &str| {
            let id = h.message(&view.room_id, &alice, body).await.unwrap();
            let outputs = h.outputs_until(&view.room_id, &id).await;
            outputs.last().unwrap().event.pdu["prev_events"].as_array().unwrap().len()
        };
        assert_eq!(prev_count("first").await, 20, "the deepest 20 extremities");
        assert_eq!(prev_count("second").await, 6, "the 5 left and the first");
        assert_eq!(prev_count("third").await, 1);
        assert_eq!(h.count(extremities).await, before, "one extremity again");

        let bodies: Vec<String> = (0..16).map(|i| format!("concurrent {i}")).collect();
        let sends = bodies.iter().map(|body| h.message(&view.room_id, &alice, body));
        let ids: Vec<String> = futures::future::join_all(sends).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(h.count(extremities).await, before, "concurrent local sends leave one extremity");
        let outputs = loop {
            let outputs = h.room_outputs(&view.room_id);
            if ids.iter().all(|id| outputs.iter().any(|o| o.event.event_id.as_str() == id)) {
                break outputs;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        for id in &ids {
            let output = outputs.iter().find(|o| o.event.event_id.as_str() == id).unwrap();
            assert_eq!(output.event.pdu["prev_events"].as_array().unwrap().len(), 1, "{id} cites one event");
        }
    })
    .await;
}

/// A create event whose content hash does not match is redacted, and a
/// redacted room version 10 create event names no room version (v10 keeps
/// only `creator`): it cannot start the room, so neither can the join.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>
#[tokio::test]
async fn a_redacted_create_event_does_not_start_a_version_10_room() {
    each_backend(|h| async move {
        let alice = user("alice");
        let version = RoomVersionId::V10;
        let local_room = h.create(public_room(&alice)).await.unwrap();
        let view = RemoteView::start(&h, &local_room, version.clone()).await;
        let (mut events, join) = remote_room(&view.peer.key, &version, &format!("!redacted:{REMOTE}"));
        events[0].1["content"]["extra"] = json!("tampered after signing");
        let (_, join) = sign(&h.key, super::SERVER, &version, join);
        let room_id: OwnedRoomId = join["room_id"].as_str().unwrap().try_into().unwrap();
        let state: Vec<Value> = events.iter().map(|(_, pdu)| pdu.clone()).collect();
        let joined = join_answer(&version, &join, state.clone(), state);
        let error = h.input(room_id.as_str(), InputRequest::JoinedRemoteRoom(joined)).await.unwrap_err();
        assert_eq!(error.errcode, ErrorCode::Forbidden, "{error:?}");
        assert!(error.error.contains("no valid create event"), "{error:?}");
        assert!(!h.joined_rooms(&alice).await.contains(&room_id));
        assert!(h.room_outputs(&room_id).is_empty(), "nothing of the room reached the output topic");
    })
    .await;
}

/// State events that have no place in the auth-chain index.
const UNPLACED_STATE: &str = "SELECT COUNT(*) FROM roomserver_events e WHERE e.state_key IS NOT NULL \
     AND NOT EXISTS (SELECT 1 FROM roomserver_auth_chains c WHERE c.event_id = e.event_id)";

/// Non-state events that have one.
const PLACED_MESSAGES: &str = "SELECT COUNT(*) FROM roomserver_auth_chains c \
     JOIN roomserver_events e ON e.event_id = c.event_id WHERE e.state_key IS NULL";

/// The state before `event_id`, as the room server serves it.
async fn state_before(h: &Harness, room_id: &OwnedRoomId, event_id: &str) -> Vec<String> {
    let read = ServerRead::State { room_id: room_id.clone(), event_id: event_id.try_into().unwrap() };
    let request = QueryRequest::ServerRead { server: REMOTE.try_into().unwrap(), read };
    match h.query(room_id.as_str(), request).await.unwrap() {
        QueryOk::ServerEvents { events, .. } => {
            let mut ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
            ids.sort();
            ids
        }
        other => panic!("unexpected reply {other:?}"),
    }
}

/// Every state event, local or received, gets a place in the auth-chain
/// index (in version 12 too, where the creator's join cites no auth event);
/// a fork merge in a room whose events lost theirs (as if stored before the
/// index) places them again, and resolves as it did with them.
#[tokio::test]
async fn forks_resolve_alike_after_the_auth_chain_index_is_rebuilt_v11() {
    forks_resolve_alike_after_the_auth_chain_index_is_rebuilt(RoomVersionId::V11).await;
}

#[tokio::test]
async fn forks_resolve_alike_after_the_auth_chain_index_is_rebuilt_v12() {
    forks_resolve_alike_after_the_auth_chain_index_is_rebuilt(RoomVersionId::V12).await;
}

async fn forks_resolve_alike_after_the_auth_chain_index_is_rebuilt(version: RoomVersionId) {
    each_backend(|h| {
        let version = version.clone();
        async move {
            let (alice, bob, carol) = (user("alice"), remote_user("bob"), remote_user("carol"));
            let (mut view, bob_join, carol_join) = carol_moderates(&h, version.clone()).await;
            h.message(&view.room_id, &alice, "not state").await.unwrap();
            view.refresh(&h).await;
            assert_eq!(h.count(UNPLACED_STATE).await, 0, "{}", h.name());
            assert_eq!(h.count(PLACED_MESSAGES).await, 0, "{}", h.name());
            let base = view.tip.clone();
            let step = |view: &mut RemoteView, fields: Value| {
                let (id, pdu) = view.pdu(fields);
                view.tip = (id.clone(), view.tip.1 + 1);
                (id, pdu)
            };

            // One fork raises bob and renames him twice; the other bans him.
            let raise = json!({"users": view.users_with_power(&[(&carol, 100), (&bob, 50)])});
            let member_auth = |view: &RemoteView, member: &str| {
                view.with_create(vec![view.power_levels.clone(), view.join_rules.clone(), member.to_owned()])
            };
            let fields = json!({"type": "m.room.power_levels", "state_key": "", "sender": carol, "content": raise,
            "auth_events": view.with_create(vec![view.power_levels.clone(), carol_join.clone()])});
            let raised = step(&mut view, fields);
            let fields = json!({"type": "m.room.member", "state_key": bob, "sender": bob,
            "content": {"membership": "join", "displayname": "Bob"}, "auth_events": member_auth(&view, &bob_join)});
            let renamed = step(&mut view, fields);
            let fields = json!({"type": "m.room.member", "state_key": bob, "sender": bob,
            "content": {"membership": "join", "displayname": "Bobby"}, "auth_events": member_auth(&view, &renamed.0)});
            let renamed_again = step(&mut view, fields);
            let first_tip = view.tip.clone();
            let pdus: Vec<Value> = [raised, renamed, renamed_again].into_iter().map(|(_, pdu)| pdu).collect();
            for (i, result) in view.send(&h, PduKind::Timeline, pdus).await.iter().enumerate() {
                assert_eq!(result.outcome, PduOutcome::Accepted, "first fork, event {i}");
            }
            view.tip = base;
            let fields = json!({"type": "m.room.member", "state_key": bob, "sender": carol,
            "content": {"membership": "ban"},
            "auth_events": view.with_create(vec![view.power_levels.clone(), carol_join.clone(), bob_join.clone()])});
            let ban = step(&mut view, fields);
            let fields = json!({"type": "m.room.topic", "state_key": "", "sender": carol,
            "content": {"topic": "second fork"},
            "auth_events": view.with_create(vec![view.power_levels.clone(), carol_join.clone()])});
            let topic = step(&mut view, fields);
            let second_tip = view.tip.clone();
            for result in view.send(&h, PduKind::Timeline, vec![ban.1, topic.1]).await {
                assert_eq!(result.outcome, PduOutcome::Accepted, "second fork");
            }
            assert_eq!(h.count(UNPLACED_STATE).await, 0, "received events are placed too");

            let merge = |view: &RemoteView, body: &str| {
                view.pdu(json!({"type": "m.room.message", "sender": carol, "content": {"body": body},
                "prev_events": [first_tip.0, second_tip.0], "depth": first_tip.1.max(second_tip.1) + 1,
                "auth_events": view.with_create(vec![view.power_levels.clone(), carol_join.clone()])}))
            };
            let (indexed, pdu) = merge(&view, "with the index");
            accepted(&view.send(&h, PduKind::Timeline, vec![pdu]).await, 0, &indexed);
            let resolved = state_before(&h, &view.room_id, &indexed).await;
            assert!(resolved.contains(&ban.0), "the ban wins over bob's renames");
            assert!(resolved.contains(&topic.0));

            // The room's events lose their places, as if stored before the index;
            // what is stored on top of them gets none either.
            with_db!(&h.db, pool => {
                sqlx::query("DELETE FROM roomserver_auth_chains").execute(pool).await.unwrap();
                sqlx::query("DELETE FROM roomserver_auth_chain_links").execute(pool).await.unwrap();
            });
            h.send(&view.room_id, &alice, "m.room.name", Some(""), json!({"name": "unplaced"}), None).await.unwrap();
            assert_eq!(h.count("SELECT COUNT(*) FROM roomserver_auth_chains").await, 0, "{}", h.name());
            let (rebuilt, pdu) = merge(&view, "after the index is rebuilt");
            accepted(&view.send(&h, PduKind::Timeline, vec![pdu]).await, 0, &rebuilt);
            assert_eq!(h.count(UNPLACED_STATE).await, 0, "{}: every state event is placed again", h.name());
            assert_eq!(state_before(&h, &view.room_id, &rebuilt).await, resolved, "{}", h.name());
        }
    })
    .await;
}
