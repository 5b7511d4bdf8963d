//! The room server over the real bus on SQLite and PostgreSQL, driven only
//! through its request topics and observed through its output topic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use myelin_bus::{Bus, BusError, EmbeddedBackend, HandleError, Handler, Headers, Record, Shutdown, ShutdownTrigger};
use myelin_config::Config;
use myelin_roomserver::api::*;
use myelin_roomserver::service::{self, Started};
use myelin_storage::{Db, sqlx, with_db};
use myelin_testkit::TestDb;
use myelin_types::clock::SharedClock;
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, ManualClock, MatrixError, SystemClock};
use ruma::serde::Base64;
use ruma::signatures::{Verified, reference_hash, verify_event};
use ruma::{CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Value, json};
use tempfile::TempDir;

mod federation;

const SERVER: &str = "test.example";

fn user(name: &str) -> OwnedUserId {
    format!("@{name}:{SERVER}").try_into().unwrap()
}

/// Collects every record of a topic.
#[derive(Default)]
struct Collector(Mutex<Vec<Record>>);

#[async_trait]
impl Handler for Collector {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        self.0.lock().unwrap().push(record.clone());
        Ok(())
    }
}

struct Harness {
    test_db: TestDb,
    dir: TempDir,
    key: ServerSigningKey,
    bus: Bus,
    db: Db,
    trigger: ShutdownTrigger,
    started: Started,
    outputs: Arc<Collector>,
    collector: tokio::task::JoinHandle<Result<(), BusError>>,
    clock: SharedClock,
}

impl Harness {
    async fn start(test_db: TestDb) -> Self {
        Self::start_with_clock(test_db, Arc::new(SystemClock)).await
    }

    async fn start_with_clock(test_db: TestDb, clock: SharedClock) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key_file = ServerSigningKey::generate_file_contents();
        std::fs::write(dir.path().join("signing.key"), &key_file).unwrap();
        let key = ServerSigningKey::parse(&key_file).unwrap();
        Self::boot(test_db, dir, key, clock).await
    }

    async fn boot(test_db: TestDb, dir: TempDir, key: ServerSigningKey, clock: SharedClock) -> Self {
        // Retries and poison records in the output of a failing test.
        myelin_testkit::capture_logs("info");
        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = SERVER.to_owned();
        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let bus = Bus::new(Arc::new(backend), clock.clone());
        let (trigger, shutdown) = Shutdown::new();
        let started = service::start(Arc::new(config), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let outputs = Arc::new(Collector::default());
        let collector = bus.consume("test.output", OUTPUT_TOPIC, outputs.clone(), shutdown);
        Self { test_db, dir, key, bus, db, trigger, started, outputs, collector, clock }
    }

    /// Stop everything and start again on the same database and key.
    async fn restart(self) -> Self {
        self.trigger.trigger();
        for task in self.started.tasks {
            task.await.unwrap().unwrap();
        }
        self.collector.await.unwrap().unwrap();
        self.db.close().await;
        Self::boot(self.test_db, self.dir, self.key, self.clock).await
    }

    fn name(&self) -> &'static str {
        self.test_db.name
    }

    async fn input(&self, key: &str, request: InputRequest) -> InputReply {
        self.bus.request_json(INPUT_TOPIC, key, &request, REQUEST_TIMEOUT).await.unwrap()
    }

    async fn query(&self, key: &str, request: QueryRequest) -> QueryReply {
        self.bus.request_json(QUERY_TOPIC, key, &request, REQUEST_TIMEOUT).await.unwrap()
    }

    async fn create(&self, request: CreateRoom) -> Result<OwnedRoomId, MatrixError> {
        let key = request.creator.to_string();
        match self.input(&key, InputRequest::CreateRoom(request)).await? {
            InputOk::RoomCreated { room_id } => Ok(room_id),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn send(
        &self,
        room_id: &OwnedRoomId,
        sender: &OwnedUserId,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
        txn: Option<TxnRef>,
    ) -> Result<String, MatrixError> {
        let request = SendEvent {
            room_id: room_id.clone(),
            sender: sender.clone(),
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            content,
            txn,
            sender_is_guest: false,
            origin_server_ts: None,
        };
        match self.input(room_id.as_str(), InputRequest::SendEvent(request)).await? {
            InputOk::EventSent { event_id } => Ok(event_id.to_string()),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn message(&self, room_id: &OwnedRoomId, sender: &OwnedUserId, body: &str) -> Result<String, MatrixError> {
        self.send(room_id, sender, "m.room.message", None, json!({"msgtype": "m.text", "body": body}), None).await
    }

    async fn membership(
        &self,
        room_id: &OwnedRoomId,
        user: &OwnedUserId,
        membership: &str,
    ) -> Result<String, MatrixError> {
        self.send(room_id, user, "m.room.member", Some(user.as_str()), json!({"membership": membership}), None).await
    }

    async fn state(
        &self,
        room_id: &OwnedRoomId,
        requester: &OwnedUserId,
        event_type: Option<&str>,
        state_key: Option<&str>,
    ) -> Result<Vec<StoredEvent>, MatrixError> {
        let request = QueryRequest::RoomState {
            room_id: room_id.clone(),
            requester: requester.clone(),
            event_type: event_type.map(str::to_owned),
            state_key: state_key.map(str::to_owned),
        };
        match self.query(room_id.as_str(), request).await? {
            QueryOk::State { events } => Ok(events),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    async fn joined_rooms(&self, user_id: &OwnedUserId) -> Vec<OwnedRoomId> {
        match self.query(user_id.as_str(), QueryRequest::JoinedRooms { user_id: user_id.clone() }).await.unwrap() {
            QueryOk::JoinedRooms { room_ids } => room_ids,
            other => panic!("unexpected reply {other:?}"),
        }
    }

    /// Output records of `room_id` so far, once the last one is `until`.
    async fn outputs_until(&self, room_id: &OwnedRoomId, until: &str) -> Vec<NewRoomEvent> {
        for _ in 0..300 {
            let events = self.room_outputs(room_id);
            if events.last().is_some_and(|e| e.event.event_id.as_str() == until) {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{until} never reached the output topic on {}", self.name());
    }

    fn room_outputs(&self, room_id: &OwnedRoomId) -> Vec<NewRoomEvent> {
        self.outputs
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|record| match record.json::<OutputRecord>().unwrap() {
                OutputRecord::NewRoomEvent(event) => event,
            })
            .filter(|event| &event.event.room_id == room_id)
            .collect()
    }

    async fn count(&self, sql: &'static str) -> i64 {
        with_db!(&self.db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap())
    }

    /// Check an event's signature and content hash against the server key
    /// and its id against its reference hash.
    fn verify(&self, event: &StoredEvent, version: &RoomVersionId) {
        let rules = version.rules().unwrap();
        let CanonicalJsonValue::Object(object) = CanonicalJsonValue::try_from(event.pdu.clone()).unwrap() else {
            panic!("PDU is not an object")
        };
        let keys = BTreeMap::from([(
            SERVER.to_owned(),
            BTreeMap::from([(self.key.key_id(), Base64::parse(self.key.public_key_base64()).unwrap())]),
        )]);
        assert_eq!(verify_event(&keys, &object, &rules).unwrap(), Verified::All);
        if rules.event_format.require_event_id {
            assert_eq!(event.pdu["event_id"], event.event_id.as_str(), "v1 and v2 events carry their id");
            assert!(event.event_id.as_str().ends_with(&format!(":{SERVER}")));
        } else {
            let hash = reference_hash(&object, &rules).unwrap();
            assert_eq!(event.event_id.as_str(), format!("${hash}"));
        }
    }
}

fn create_request(creator: &OwnedUserId) -> CreateRoom {
    CreateRoom {
        creator: creator.clone(),
        creator_profile: Default::default(),
        room_version: None,
        preset: None,
        visibility: None,
        name: None,
        topic: None,
        invite: Vec::new(),
        is_direct: false,
        initial_state: Vec::new(),
        creation_content: None,
        power_level_content_override: None,
    }
}

fn public_room(creator: &OwnedUserId) -> CreateRoom {
    CreateRoom { preset: Some("public_chat".into()), name: Some("Lobby".into()), ..create_request(creator) }
}

fn assert_error(result: Result<impl std::fmt::Debug, MatrixError>, code: ErrorCode, status: u16) {
    let error = result.expect_err("request should fail");
    assert_eq!((error.errcode, error.status), (code, status), "{error:?}");
}

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(Harness) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for test_db in TestDb::both().await {
        test(Harness::start(test_db).await).await;
    }
}

#[tokio::test]
async fn creates_rooms_in_versions_10_11_12() {
    each_backend(|h| async move {
        let alice = user("alice");
        let bob = user("bob");
        for version in [RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12] {
            let request = CreateRoom {
                room_version: Some(version.to_string()),
                name: Some("Room".into()),
                topic: Some("About".into()),
                invite: vec![bob.clone()],
                is_direct: true,
                preset: Some("trusted_private_chat".into()),
                initial_state: vec![StateEventSpec {
                    event_type: "m.room.encryption".into(),
                    state_key: String::new(),
                    content: json!({"algorithm": "m.megolm.v1.aes-sha2"}),
                }],
                ..create_request(&alice)
            };
            let room_id = h.create(request).await.unwrap();
            let last_invite = loop {
                let outputs = h.room_outputs(&room_id);
                if let Some(last) = outputs
                    .last()
                    .filter(|e| e.event.pdu["type"] == "m.room.member" && e.event.pdu["state_key"] == bob.as_str())
                {
                    break last.event.event_id.to_string();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let outputs = h.outputs_until(&room_id, &last_invite).await;
            let types: Vec<&str> = outputs.iter().map(|e| e.event.pdu["type"].as_str().unwrap()).collect();
            assert_eq!(
                types,
                [
                    "m.room.create",
                    "m.room.member",
                    "m.room.power_levels",
                    "m.room.join_rules",
                    "m.room.history_visibility",
                    "m.room.guest_access",
                    "m.room.encryption",
                    "m.room.name",
                    "m.room.topic",
                    "m.room.member"
                ]
            );
            for output in &outputs {
                assert_eq!(output.room_version, version.as_str());
                assert_eq!(output.state_delta.added, vec![output.event.clone()], "state events enter current state");
                h.verify(&output.event, &version);
            }
            let create = &outputs[0].event;
            assert_eq!(create.pdu["content"]["room_version"], version.as_str());
            let power = &outputs[2].event.pdu["content"];
            assert_eq!(power["users"][bob.as_str()], 100, "trusted_private_chat invitees get the creator's level");
            match version {
                RoomVersionId::V10 => {
                    assert_eq!(create.pdu["content"]["creator"], alice.as_str());
                    assert_eq!(create.pdu["room_id"], room_id.as_str());
                    assert_eq!(power["users"][alice.as_str()], 100);
                }
                RoomVersionId::V11 => {
                    assert!(create.pdu["content"].get("creator").is_none());
                    assert_eq!(power["users"][alice.as_str()], 100);
                }
                _ => {
                    assert!(create.pdu.get("room_id").is_none(), "v12 create events carry no room id");
                    assert_eq!(room_id.as_str(), format!("!{}", &create.event_id.as_str()[1..]));
                    assert!(power["users"].get(alice.as_str()).is_none(), "v12 creators are not in power levels");
                }
            }
            assert_eq!(outputs[9].event.pdu["content"], json!({"membership": "invite", "is_direct": true}));
            assert_eq!(outputs[3].event.pdu["content"]["join_rule"], "invite");
            assert_eq!(outputs[5].event.pdu["content"]["guest_access"], "can_join");
            // Each event builds on the previous one.
            for pair in outputs.windows(2) {
                assert_eq!(pair[1].event.pdu["prev_events"], json!([pair[0].event.event_id]));
                assert_eq!(pair[1].event.pdu["depth"].as_i64(), pair[0].event.pdu["depth"].as_i64().map(|d| d + 1));
            }
            assert!(h.joined_rooms(&alice).await.contains(&room_id));
        }
        assert_error(
            h.create(CreateRoom { room_version: Some("0".into()), ..create_request(&alice) }).await,
            ErrorCode::UnsupportedRoomVersion,
            400,
        );
        assert_error(
            h.create(CreateRoom { room_version: Some("13".into()), ..create_request(&alice) }).await,
            ErrorCode::UnsupportedRoomVersion,
            400,
        );
        let bad_state =
            StateEventSpec { event_type: "m.room.topic".into(), state_key: String::new(), content: json!(5) };
        assert_error(
            h.create(CreateRoom { initial_state: vec![bad_state], ..create_request(&alice) }).await,
            ErrorCode::BadJson,
            400,
        );
        assert_error(
            h.create(CreateRoom { preset: Some("party".into()), ..create_request(&alice) }).await,
            ErrorCode::InvalidParam,
            400,
        );
        let member_state =
            StateEventSpec { event_type: "m.room.member".into(), state_key: bob.to_string(), content: json!({}) };
        assert_error(
            h.create(CreateRoom { initial_state: vec![member_state], ..create_request(&alice) }).await,
            ErrorCode::InvalidParam,
            400,
        );
    })
    .await;
}

#[tokio::test]
async fn messages_and_state_events_are_emitted_in_order() {
    each_backend(|h| async move {
        let alice = user("alice");
        let overrides = json!({"events_default": 10, "users": {alice.as_str(): 100}});
        let request = CreateRoom {
            room_version: Some("11".into()),
            power_level_content_override: Some(overrides.as_object().unwrap().clone()),
            ..public_room(&alice)
        };
        let room_id = h.create(request).await.unwrap();
        let power = h.state(&room_id, &alice, Some("m.room.power_levels"), Some("")).await.unwrap();
        assert_eq!(power[0].pdu["content"]["events_default"], 10, "power_level_content_override applies");
        assert_eq!(power[0].pdu["content"]["state_default"], 50);
        let rules = h.state(&room_id, &alice, Some("m.room.join_rules"), Some("")).await.unwrap();
        assert_eq!(rules[0].pdu["content"]["join_rule"], "public");
        let guests = h.state(&room_id, &alice, Some("m.room.guest_access"), Some("")).await.unwrap();
        assert_eq!(guests[0].pdu["content"]["guest_access"], "forbidden");
        let mut sent = Vec::new();
        for i in 0..5 {
            sent.push(h.message(&room_id, &alice, &format!("message {i}")).await.unwrap());
        }
        let topic = h.send(&room_id, &alice, "m.room.topic", Some(""), json!({"topic": "new"}), None).await.unwrap();
        sent.push(topic.clone());
        let outputs = h.outputs_until(&room_id, &topic).await;
        let tail: Vec<String> = outputs[outputs.len() - 6..].iter().map(|e| e.event.event_id.to_string()).collect();
        assert_eq!(tail, sent);
        for output in &outputs[outputs.len() - 6..outputs.len() - 1] {
            assert!(output.state_delta.added.is_empty(), "messages change no state");
            h.verify(&output.event, &RoomVersionId::V11);
        }
        let last = outputs.last().unwrap();
        assert_eq!(last.state_delta.added.len(), 1);
        assert_eq!(last.state_delta.added[0].event_id.as_str(), topic);
        let topic_state = h.state(&room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap();
        assert_eq!(topic_state.len(), 1);
        assert_eq!(topic_state[0].pdu["content"]["topic"], "new");
        let all = h.state(&room_id, &alice, None, None).await.unwrap();
        assert!(all.iter().any(|e| e.pdu["type"] == "m.room.name"));
        assert_error(h.state(&room_id, &alice, Some("m.room.avatar"), Some("")).await, ErrorCode::NotFound, 404);
    })
    .await;
}

#[tokio::test]
async fn local_users_join_public_rooms_and_invited_rooms() {
    each_backend(|h| async move {
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let public = h.create(public_room(&alice)).await.unwrap();
        h.membership(&public, &bob, "join").await.unwrap();
        h.message(&public, &bob, "hello").await.unwrap();
        assert_eq!(h.joined_rooms(&bob).await, vec![public.clone()]);

        let private =
            h.create(CreateRoom { preset: Some("private_chat".into()), ..create_request(&alice) }).await.unwrap();
        assert_error(h.membership(&private, &carol, "join").await, ErrorCode::Forbidden, 403);
        h.send(&private, &alice, "m.room.member", Some(carol.as_str()), json!({"membership": "invite"}), None)
            .await
            .unwrap();
        h.membership(&private, &carol, "join").await.unwrap();
        assert_eq!(h.joined_rooms(&carol).await, vec![private.clone()]);
        let members = h.state(&private, &carol, Some("m.room.member"), None).await.unwrap();
        assert_eq!(members.len(), 2);

        let unknown: OwnedRoomId = format!("!nope:{SERVER}").try_into().unwrap();
        assert_error(h.membership(&unknown, &bob, "join").await, ErrorCode::NotFound, 404);
        assert_error(h.message(&unknown, &bob, "hi").await, ErrorCode::Forbidden, 403);
    })
    .await;
}

/// A restricted room lets in a local user joined to an allowed room, the
/// join naming the local user with the most power to invite as its
/// authoriser; anyone else is refused with 403 `M_FORBIDDEN`, and an invite
/// still lets them in without one.
#[tokio::test]
async fn local_users_join_restricted_rooms_through_an_allowed_room() {
    each_backend(|h| async move {
        let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
        let lobby = h.create(public_room(&alice)).await.unwrap();
        h.membership(&lobby, &bob, "join").await.unwrap();
        for join_rule in ["restricted", "knock_restricted"] {
            let inner =
                h.create(CreateRoom { preset: Some("private_chat".into()), ..create_request(&alice) }).await.unwrap();
            let rules = json!({"join_rule": join_rule, "allow": [{"type": "m.room_membership", "room_id": lobby}]});
            h.send(&inner, &alice, "m.room.join_rules", Some(""), rules, None).await.unwrap();

            h.membership(&inner, &bob, "join").await.unwrap();
            let member = h.state(&inner, &bob, Some("m.room.member"), Some(bob.as_str())).await.unwrap();
            let content = &member[0].pdu["content"];
            assert_eq!(content["membership"], "join", "{join_rule}");
            assert_eq!(content["join_authorised_via_users_server"], alice.as_str(), "{join_rule}: {content}");

            assert_error(h.membership(&inner, &carol, "join").await, ErrorCode::Forbidden, 403);
            h.send(&inner, &alice, "m.room.member", Some(dave.as_str()), json!({"membership": "invite"}), None)
                .await
                .unwrap();
            h.membership(&inner, &dave, "join").await.unwrap();
            let member = h.state(&inner, &dave, Some("m.room.member"), Some(dave.as_str())).await.unwrap();
            assert!(member[0].pdu["content"].get("join_authorised_via_users_server").is_none(), "invited: no authoriser");
        }

        // Allowed rooms this server does not know let nobody in.
        let elsewhere =
            h.create(CreateRoom { preset: Some("private_chat".into()), ..create_request(&alice) }).await.unwrap();
        let rules = json!({"join_rule": "restricted", "allow": [{"type": "m.room_membership", "room_id": "!gone:elsewhere.example"}]});
        h.send(&elsewhere, &alice, "m.room.join_rules", Some(""), rules, None).await.unwrap();
        assert_error(h.membership(&elsewhere, &bob, "join").await, ErrorCode::Forbidden, 403);
    })
    .await;
}

#[tokio::test]
async fn events_that_fail_checks_are_refused() {
    each_backend(|h| async move {
        let (alice, bob, eve) = (user("alice"), user("bob"), user("eve"));
        let room_id = h.create(public_room(&alice)).await.unwrap();
        assert_error(h.message(&room_id, &eve, "not a member").await, ErrorCode::Forbidden, 403);
        h.membership(&room_id, &bob, "join").await.unwrap();
        let grab = json!({"users": {bob.as_str(): 100}});
        assert_error(
            h.send(&room_id, &bob, "m.room.power_levels", Some(""), grab, None).await,
            ErrorCode::Forbidden,
            403,
        );
        let huge = json!({"msgtype": "m.text", "body": "x".repeat(70_000)});
        assert_error(h.send(&room_id, &alice, "m.room.message", None, huge, None).await, ErrorCode::TooLarge, 413);
        let long_type = "t".repeat(256);
        assert_error(h.send(&room_id, &alice, &long_type, None, json!({}), None).await, ErrorCode::TooLarge, 413);
        let long_key = "k".repeat(256);
        assert_error(
            h.send(&room_id, &alice, "m.custom", Some(&long_key), json!({}), None).await,
            ErrorCode::TooLarge,
            413,
        );
        assert_error(
            h.send(&room_id, &alice, "m.room.message", None, json!({"n": 1.5}), None).await,
            ErrorCode::BadJson,
            400,
        );
        assert_error(h.send(&room_id, &alice, "m.room.message", None, json!([1]), None).await, ErrorCode::BadJson, 400);
        for topic in [INPUT_TOPIC, QUERY_TOPIC] {
            let garbage = h.bus.request(topic, room_id.as_str(), b"{\"kind\":\"nonsense\"}".to_vec(), REQUEST_TIMEOUT);
            assert!(matches!(garbage.await, Err(BusError::Remote { .. })), "malformed requests are refused");
        }
        let remote: OwnedUserId = "@mallory:elsewhere.example".try_into().unwrap();
        assert_error(h.message(&room_id, &remote, "sign this").await, ErrorCode::Forbidden, 403);
        // The room still works after the refusals.
        let ok = h.message(&room_id, &alice, "still fine").await.unwrap();
        let outputs = h.outputs_until(&room_id, &ok).await;
        assert_eq!(outputs.iter().filter(|e| e.event.pdu["sender"] == bob.as_str()).count(), 1, "only bob's join");
    })
    .await;
}

#[tokio::test]
async fn client_transactions_are_idempotent() {
    each_backend(|h| async move {
        let alice = user("alice");
        let room_id = h.create(public_room(&alice)).await.unwrap();
        let txn = TxnRef { device_id: "DEV".into(), txn_id: "t1".into() };
        let content = json!({"msgtype": "m.text", "body": "once"});
        let first = h.send(&room_id, &alice, "m.room.message", None, content.clone(), Some(txn.clone())).await.unwrap();
        let again = h.send(&room_id, &alice, "m.room.message", None, content.clone(), Some(txn.clone())).await.unwrap();
        assert_eq!(first, again);
        let other_device = TxnRef { device_id: "OTHER".into(), ..txn.clone() };
        let second = h.send(&room_id, &alice, "m.room.message", None, content, Some(other_device)).await.unwrap();
        assert_ne!(first, second);
        let outputs = h.outputs_until(&room_id, &second).await;
        let firsts: Vec<_> = outputs.iter().filter(|e| e.event.event_id.as_str() == first).collect();
        assert_eq!(firsts.len(), 1, "a repeated transaction produces no second output");
        assert_eq!(firsts[0].txn, Some(txn));
    })
    .await;
}

#[tokio::test]
async fn redelivered_requests_produce_one_event() {
    each_backend(|h| async move {
        let alice = user("alice");
        let room_id = h.create(public_room(&alice)).await.unwrap();
        let replies = Arc::new(Collector::default());
        let (_stop, shutdown) = Shutdown::new();
        let reply_topic = "reply.redelivery-test";
        let _reader = h.bus.consume("test.replies", reply_topic, replies.clone(), shutdown);
        let request = InputRequest::SendEvent(SendEvent {
            room_id: room_id.clone(),
            sender: alice.clone(),
            event_type: "m.room.message".into(),
            state_key: None,
            content: json!({"msgtype": "m.text", "body": "delivered twice"}),
            txn: None,
            sender_is_guest: false,
            origin_server_ts: None,
        });
        let headers = Headers {
            correlation_id: Some("same-correlation-id".into()),
            reply_to: Some(reply_topic.into()),
            ..Headers::default()
        };
        let payload = serde_json::to_vec(&request).unwrap();
        for _ in 0..2 {
            h.bus.produce_with(INPUT_TOPIC, room_id.as_str(), headers.clone(), payload.clone()).await.unwrap();
        }
        let marker = h.message(&room_id, &alice, "after").await.unwrap();
        let outputs = h.outputs_until(&room_id, &marker).await;
        let twice: Vec<_> = outputs.iter().filter(|e| e.event.pdu["content"]["body"] == "delivered twice").collect();
        assert_eq!(twice.len(), 2, "the redelivery emits its output again");
        assert_eq!(twice[0].event.event_id, twice[1].event.event_id, "but it is the same event");
        let marker_event = outputs.last().unwrap();
        assert_eq!(marker_event.event.pdu["prev_events"], json!([twice[0].event.event_id]));
        for _ in 0..300 {
            if replies.0.lock().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let replies: Vec<InputReply> = replies.0.lock().unwrap().iter().map(|r| r.json().unwrap()).collect();
        let expected: InputReply = Ok(InputOk::EventSent { event_id: twice[0].event.event_id.clone() });
        assert_eq!(replies, vec![expected.clone(), expected]);
    })
    .await;
}

#[tokio::test]
async fn room_state_follows_membership() {
    each_backend(|h| async move {
        let (alice, bob, eve) = (user("alice"), user("bob"), user("eve"));
        let room_id = h.create(public_room(&alice)).await.unwrap();
        assert_error(h.state(&room_id, &eve, None, None).await, ErrorCode::Forbidden, 403);
        h.membership(&room_id, &bob, "join").await.unwrap();
        let leave = h.membership(&room_id, &bob, "leave").await.unwrap();
        h.send(&room_id, &alice, "m.room.name", Some(""), json!({"name": "Renamed"}), None).await.unwrap();
        h.send(&room_id, &alice, "m.room.topic", Some(""), json!({"topic": "later"}), None).await.unwrap();

        let at_leave = h.state(&room_id, &bob, None, None).await.unwrap();
        let name = at_leave.iter().find(|e| e.pdu["type"] == "m.room.name").unwrap();
        assert_eq!(name.pdu["content"]["name"], "Lobby", "the state when bob left");
        assert!(!at_leave.iter().any(|e| e.pdu["type"] == "m.room.topic"));
        let own = at_leave.iter().find(|e| e.pdu["state_key"] == bob.as_str()).unwrap();
        assert_eq!(own.event_id.as_str(), leave);
        let now = h.state(&room_id, &alice, Some("m.room.name"), Some("")).await.unwrap();
        assert_eq!(now[0].pdu["content"]["name"], "Renamed");
        assert!(h.joined_rooms(&bob).await.is_empty());
    })
    .await;
}

#[tokio::test]
async fn rooms_and_transactions_survive_a_restart() {
    for test_db in TestDb::both().await {
        let h = Harness::start(test_db).await;
        let alice = user("alice");
        let room_id = h.create(public_room(&alice)).await.unwrap();
        let txn = TxnRef { device_id: "DEV".into(), txn_id: "persisted".into() };
        let content = json!({"msgtype": "m.text", "body": "before restart"});
        let first = h.send(&room_id, &alice, "m.room.message", None, content.clone(), Some(txn.clone())).await.unwrap();
        h.outputs_until(&room_id, &first).await;

        let h = h.restart().await;
        let again = h.send(&room_id, &alice, "m.room.message", None, content, Some(txn)).await.unwrap();
        assert_eq!(first, again, "{}", h.name());
        let next = h.message(&room_id, &alice, "after restart").await.unwrap();
        let outputs = h.outputs_until(&room_id, &next).await;
        assert_eq!(outputs.last().unwrap().event.pdu["prev_events"], json!([first]));
        assert!(outputs.iter().all(|e| e.event.event_id.as_str() != first), "no output replayed after restart");
        assert_eq!(h.joined_rooms(&alice).await, vec![room_id.clone()]);
        assert_eq!(h.state(&room_id, &alice, Some("m.room.name"), Some("")).await.unwrap().len(), 1);
    }
}

#[tokio::test]
async fn state_storage_does_not_copy_state_per_event() {
    each_backend(|h| async move {
        let alice = user("alice");
        let room_id = h.create(public_room(&alice)).await.unwrap();
        let setup_snapshots = h.count("SELECT COUNT(*) FROM roomserver_state_snapshots").await;
        let setup_entries = h.count("SELECT COUNT(*) FROM roomserver_state_entries").await;
        let mut last = String::new();
        for i in 0..220 {
            last = if i % 11 == 10 {
                h.send(&room_id, &alice, "m.room.topic", Some(""), json!({"topic": format!("t{i}")}), None).await
            } else {
                h.message(&room_id, &alice, &format!("m{i}")).await
            }
            .unwrap();
        }
        h.outputs_until(&room_id, &last).await;
        let snapshots = h.count("SELECT COUNT(*) FROM roomserver_state_snapshots").await - setup_snapshots;
        let entries = h.count("SELECT COUNT(*) FROM roomserver_state_entries").await - setup_entries;
        // 20 state events: one delta snapshot with one entry each; messages reuse snapshots.
        assert_eq!(snapshots, 20, "{}", h.name());
        assert_eq!(entries, 20, "{}", h.name());
        let topic = h.state(&room_id, &alice, Some("m.room.topic"), Some("")).await.unwrap();
        assert_eq!(topic[0].pdu["content"]["topic"], "t219");
    })
    .await;
}

/// createRoom, a message and its redaction in every room version, with each
/// version's event id format and `redacts` placement.
#[tokio::test]
async fn every_room_version_creates_sends_and_redacts() {
    each_backend(|h| async move {
        let alice = user("alice");
        for n in 1..=12 {
            let version = RoomVersionId::try_from(n.to_string()).unwrap();
            let request = CreateRoom { room_version: Some(version.to_string()), ..public_room(&alice) };
            let room_id = h.create(request).await.unwrap();
            let message = h.message(&room_id, &alice, "regrettable").await.unwrap();
            let content = json!({"redacts": message, "reason": "oops"});
            let redaction = h.send(&room_id, &alice, "m.room.redaction", None, content, None).await.unwrap();
            let outputs = h.outputs_until(&room_id, &redaction).await;
            for output in &outputs {
                h.verify(&output.event, &version);
            }
            let id = outputs.last().unwrap().event.event_id.as_str();
            match n {
                1 | 2 => assert!(id.contains(':'), "{id}"),
                3 => assert!(!id.contains(':') && !id.contains('-') && !id.contains('_'), "{id}"),
                _ => assert!(!id.contains(':') && !id.contains('+') && !id.contains('/'), "{id}"),
            }
            let pdu = &outputs.last().unwrap().event.pdu;
            if n < 11 {
                assert_eq!(pdu["redacts"], message.as_str(), "v{n}: redacts at the top level");
                assert!(pdu["content"].get("redacts").is_none());
            } else {
                assert_eq!(pdu["content"]["redacts"], message.as_str(), "v{n}: redacts in content");
                assert!(pdu.get("redacts").is_none());
            }
            assert_eq!(pdu["content"]["reason"], "oops");
            if n <= 2 {
                let prev = &pdu["prev_events"][0];
                assert_eq!(prev[0], message.as_str(), "v{n} cites events with their hashes");
                assert!(prev[1]["sha256"].as_str().is_some_and(|hash| !hash.is_empty()));
            }
        }
        assert_error(
            h.send(
                &h.create(public_room(&alice)).await.unwrap(),
                &alice,
                "m.room.redaction",
                None,
                json!({"reason": "no target"}),
                None,
            )
            .await,
            ErrorCode::BadJson,
            400,
        );
    })
    .await;
}

/// From room version 12 a room's id is its create event's hash: the same
/// request twice in one millisecond must still make two rooms.
#[tokio::test]
async fn identical_v12_rooms_in_the_same_millisecond_get_their_own_ids() {
    for test_db in TestDb::both().await {
        let h = Harness::start_with_clock(test_db, Arc::new(ManualClock::new(1_700_000_000_000))).await;
        let alice = user("alice");
        let request = CreateRoom { room_version: Some("12".into()), ..create_request(&alice) };
        let first = h.create(request.clone()).await.unwrap();
        let second = h.create(request).await.unwrap();
        assert_ne!(first, second, "[{}]", h.name());
    }
}

/// A moderator who may send the tombstone but not power levels upgrades a
/// room: the new room lends them the power to copy the state and ends with
/// the old levels; the old room gets the tombstone but keeps its levels,
/// which they may not change. Every event is emitted, signed, in order; a
/// member without the power to upgrade changes nothing.
#[tokio::test]
async fn upgrades_lend_power_for_the_copy_and_skip_what_the_old_room_refuses() {
    each_backend(|h| async move {
        let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
        let levels = json!({
            "users": {alice.as_str(): 100, bob.as_str(): 50},
            "events": {"m.room.tombstone": 50, "m.room.power_levels": 100},
        });
        let request = CreateRoom {
            room_version: Some("10".into()),
            power_level_content_override: levels.as_object().cloned(),
            ..public_room(&alice)
        };
        let old = h.create(request).await.unwrap();
        h.membership(&old, &bob, "join").await.unwrap();
        let latest = h.membership(&old, &carol, "join").await.unwrap();
        let upgrade = |requester: &OwnedUserId| {
            InputRequest::UpgradeRoom(UpgradeRoom {
                room_id: old.clone(),
                requester: requester.clone(),
                requester_profile: Default::default(),
                new_version: "11".into(),
                additional_creators: Vec::new(),
            })
        };
        assert_error(h.input(old.as_str(), upgrade(&carol)).await, ErrorCode::Forbidden, 403);
        let reply = h.input(old.as_str(), upgrade(&bob)).await.unwrap();
        let InputOk::RoomUpgraded { replacement_room: new } = reply else { panic!("unexpected reply {reply:?}") };

        let types = [
            "m.room.create",
            "m.room.member",
            "m.room.power_levels",
            "m.room.name",
            "m.room.guest_access",
            "m.room.history_visibility",
            "m.room.join_rules",
            "m.room.power_levels",
        ];
        let mut outputs = h.room_outputs(&new);
        for _ in 0..300 {
            if outputs.len() == types.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            outputs = h.room_outputs(&new);
        }
        let seen: Vec<&str> = outputs.iter().map(|e| e.event.pdu["type"].as_str().unwrap()).collect();
        assert_eq!(seen, types, "[{}]", h.name());
        for output in &outputs {
            assert_eq!(output.room_version, "11");
            assert_eq!(output.event.pdu["sender"], bob.as_str());
            h.verify(&output.event, &RoomVersionId::V11);
        }
        let create = &outputs[0].event.pdu["content"];
        assert_eq!(create["predecessor"], json!({"room_id": old, "event_id": latest}));
        assert_eq!(outputs[2].event.pdu["content"]["users"], json!({alice.as_str(): 100, bob.as_str(): 100}));
        assert_eq!(outputs[7].event.pdu["content"]["users"], levels["users"], "the lent power is given back");

        let tombstone = h.state(&old, &alice, Some("m.room.tombstone"), Some("")).await.unwrap();
        assert_eq!(tombstone[0].pdu["content"]["replacement_room"], new.as_str());
        let old_levels = h.state(&old, &alice, Some("m.room.power_levels"), Some("")).await.unwrap();
        assert_eq!(old_levels[0].pdu["content"]["events_default"], 0, "bob may not restrict the old room");
        assert_eq!(h.joined_rooms(&bob).await, {
            let mut rooms = vec![old.clone(), new.clone()];
            rooms.sort();
            rooms
        });
    })
    .await;
}
