//! The sync API over a real embedded bus on SQLite and PostgreSQL, served on
//! a loopback port and driven over HTTP. Room events are real
//! `roomserver.output` records produced on the bus, as the room server
//! emits them. Accounts, logins, logouts and token lookups come from the
//! real client API service on the same bus (shared-secret registration).

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use myelin_bus::{Bus, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_roomserver::api::{NewRoomEvent, OUTPUT_TOPIC, OutputRecord, StateDelta, StoredEvent, TxnRef};
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use myelin_types::random::alphanumeric;
use myelin_types::signing::ServerSigningKey;
use serde_json::{Value, json};
use sha1::Sha1;

const WAIT: Duration = Duration::from_secs(15);
const SHARED_SECRET: &str = "test shared secret";
const PASSWORD: &str = "correct horse battery staple";

struct Server {
    name: &'static str,
    base: String,
    bus: Bus,
    client_base: String,
    http: reqwest::Client,
    _trigger: ShutdownTrigger,
    _db: TestDb,
    _keys: tempfile::TempDir,
}

/// Sync and client API on each backend; room events are emitted by the test.
async fn servers() -> Vec<Server> {
    let mut out = Vec::new();
    for db in TestDb::both().await {
        out.push(Server::start(db, false).await);
    }
    out
}

/// Sync, client API and room server on each backend.
async fn full_servers() -> Vec<Server> {
    let mut out = Vec::new();
    for db in TestDb::both().await {
        out.push(Server::start(db, true).await);
    }
    out
}

impl Server {
    async fn start(test_db: TestDb, with_roomserver: bool) -> Self {
        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let (trigger, shutdown) = Shutdown::new();
        let mut config = myelin_config::Config::default();
        config.global.server_name = "localhost".to_owned();
        config.client_api.registration_shared_secret = Some(SHARED_SECRET.to_owned());
        config.client_api.allow_guest_access = true;
        let keys = tempfile::tempdir().unwrap();
        config.global.signing_key_path = keys.path().join("signing.key");
        std::fs::write(&config.global.signing_key_path, ServerSigningKey::generate_file_contents()).unwrap();
        let config = Arc::new(config);
        if with_roomserver {
            myelin_roomserver::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        }
        let clientapi =
            myelin_clientapi::service::start(config.clone(), db.clone(), bus.clone(), shutdown.clone()).await.unwrap();
        let started = myelin_syncapi::service::start(config, db, bus.clone(), shutdown).await.unwrap();
        let base = serve(started.router).await;
        let client_base = serve(clientapi.router).await;
        Self {
            name: test_db.name,
            base,
            bus,
            client_base,
            http: reqwest::Client::new(),
            _trigger: trigger,
            _db: test_db,
            _keys: keys,
        }
    }

    /// Register `localpart` through the client API's shared-secret endpoint; its access token.
    async fn register(&self, localpart: &str) -> String {
        let url = format!("{}/_synapse/admin/v1/register", self.client_base);
        let nonce: Value = self.http.get(&url).send().await.unwrap().json().await.unwrap();
        let nonce = nonce["nonce"].as_str().unwrap().to_owned();
        let mut mac = Hmac::<Sha1>::new_from_slice(SHARED_SECRET.as_bytes()).unwrap();
        mac.update(format!("{nonce}\0{localpart}\0{PASSWORD}\0notadmin").as_bytes());
        let mac = hex::encode(mac.finalize().into_bytes());
        let body = json!({"nonce": nonce, "username": localpart, "password": PASSWORD, "admin": false, "mac": mac});
        let response = self.http.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "[{}] registering {localpart}", self.name);
        let reply: Value = response.json().await.unwrap();
        reply["access_token"].as_str().unwrap().to_owned()
    }

    /// Log `localpart` in on another device; its access token.
    async fn login(&self, localpart: &str, device_id: &str) -> String {
        let body = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": localpart},
            "password": PASSWORD, "device_id": device_id});
        let response =
            self.http.post(format!("{}/_matrix/client/v3/login", self.client_base)).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "[{}] login {localpart}", self.name);
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply["device_id"], device_id);
        reply["access_token"].as_str().unwrap().to_owned()
    }

    async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).timeout(Duration::from_secs(60));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    /// `POST /search` with `body`; `query` is the URL's query (`?next_batch=…`) or empty.
    async fn search(&self, token: &str, body: Value, query: &str) -> (u16, Value) {
        let path = format!("/_matrix/client/v3/search{query}");
        self.request(reqwest::Method::POST, &path, Some(token), Some(&body.to_string())).await
    }

    async fn sync(&self, token: &str, query: &str) -> Value {
        let (status, body) = self.get(&format!("/_matrix/client/v3/sync?{query}"), Some(token)).await;
        assert_eq!(status, 200, "[{}] sync {query}: {body}", self.name);
        body
    }

    /// A client API request (under `/_matrix/client/v3`) that must succeed; its body.
    async fn client(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let url = format!("{}/_matrix/client/v3{path}", self.client_base);
        let response = self.http.request(method, url).bearer_auth(token).json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "[{}] {path}: {body}", self.name);
        body
    }

    /// Sync until `done` holds for the response.
    async fn sync_until(&self, token: &str, query: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = self.sync(token, query).await;
            if done(&body) {
                return body;
            }
            assert!(Instant::now() < deadline, "[{}] sync {query} never got there: {body}", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A `/sync` long poll from `since`, running in the background.
    fn long_poll(&self, token: &str, since: &str, timeout_ms: u64) -> tokio::task::JoinHandle<Value> {
        let url = format!("{}/_matrix/client/v3/sync?since={since}&timeout={timeout_ms}", self.base);
        let request = self.http.get(url).bearer_auth(token);
        tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
    }

    /// A room made through the client API by alice, joined by bob; its id and
    /// a sync token of bob's from after his join.
    async fn shared_room(&self, alice: &str, bob: &str) -> (String, String) {
        let created = self.client(reqwest::Method::POST, "/createRoom", alice, json!({"preset": "public_chat"})).await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        self.client(reqwest::Method::POST, &format!("/rooms/{room}/join"), bob, json!({})).await;
        let body = self.sync_until(bob, "", |b| b["rooms"]["join"].get(&room).is_some()).await;
        (room, next_batch(&body))
    }

    /// Emit one accepted event on `roomserver.output`, as the room server does.
    async fn emit(&self, room: &str, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> String {
        self.emit_with(room, sender, kind, state_key, content, None).await.0
    }

    async fn emit_with(
        &self,
        room: &str,
        sender: &str,
        kind: &str,
        state_key: Option<&str>,
        content: Value,
        txn: Option<TxnRef>,
    ) -> (String, OutputRecord) {
        let stored = stored_event(room, sender, kind, state_key, content);
        let event_id = stored.event_id.to_string();
        let state_delta =
            StateDelta { added: if state_key.is_some() { vec![stored.clone()] } else { vec![] }, removed: vec![] };
        let record = OutputRecord::NewRoomEvent(NewRoomEvent {
            event: stored,
            room_version: "12".to_owned(),
            state_delta,
            txn,
            historical: false,
        });
        self.bus.produce_json(OUTPUT_TOPIC, room, &record).await.unwrap();
        (event_id, record)
    }

    async fn message(&self, room: &str, sender: &str, body: &str) -> String {
        self.emit(room, sender, "m.room.message", None, json!({"msgtype": "m.text", "body": body})).await
    }

    async fn membership(&self, room: &str, sender: &str, target: &str, membership: &str) -> String {
        self.emit(room, sender, "m.room.member", Some(target), json!({"membership": membership})).await
    }

    /// A room made by `creator` with the usual initial state; returns its id.
    async fn create_room(&self, creator: &str) -> String {
        let room = format!("!{}:localhost", alphanumeric(18));
        self.emit(&room, creator, "m.room.create", Some(""), json!({"room_version": "12"})).await;
        self.membership(&room, creator, creator, "join").await;
        self.emit(&room, creator, "m.room.power_levels", Some(""), json!({"users": {creator: 100}})).await;
        self.emit(&room, creator, "m.room.join_rules", Some(""), json!({"join_rule": "invite"})).await;
        self.emit(&room, creator, "m.room.name", Some(""), json!({"name": "Test room"})).await;
        room
    }

    /// Wait until `token`'s user sees `event_id` in an initial sync.
    async fn settle(&self, token: &str, event_id: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let body = self
                .sync(token, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":1000},"include_leave":true}}"#)))
                .await;
            if body.to_string().contains(event_id) {
                return;
            }
            assert!(Instant::now() < deadline, "[{}] event {event_id} never appeared", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An event as the room server emits it (its hashes and signatures are not checked here).
fn stored_event(room: &str, sender: &str, kind: &str, state_key: Option<&str>, content: Value) -> StoredEvent {
    let event_id = format!("${}", alphanumeric(43));
    let mut pdu = json!({
        "type": kind, "sender": sender, "content": content, "room_id": room,
        "origin_server_ts": 1_700_000_000_000u64, "depth": 1, "prev_events": [], "auth_events": [],
        "hashes": {"sha256": "x"}, "signatures": {},
    });
    if let Some(state_key) = state_key {
        pdu["state_key"] = json!(state_key);
    }
    StoredEvent { event_id: event_id.as_str().try_into().unwrap(), room_id: room.try_into().unwrap(), pdu }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn timeline<'a>(body: &'a Value, section: &str, room: &str) -> &'a Vec<Value> {
    body["rooms"][section][room]["timeline"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no {section} timeline for {room}: {body}"))
}

fn bodies(events: &[Value]) -> Vec<String> {
    events.iter().filter_map(|e| e["content"]["body"].as_str().map(str::to_owned)).collect()
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["type"].as_str().unwrap().to_owned()).collect()
}

fn next_batch(body: &Value) -> String {
    body["next_batch"].as_str().unwrap().to_owned()
}

fn global_account_data(body: &Value) -> &Vec<Value> {
    body["account_data"]["events"].as_array().unwrap()
}

/// The joined room's events of one kind (`account_data`, `ephemeral`); empty when the room is absent.
fn room_events(body: &Value, room: &str, kind: &str) -> Vec<Value> {
    body["rooms"]["join"][room][kind]["events"].as_array().cloned().unwrap_or_default()
}

/// The `m.typing` user ids in the joined room's ephemeral events, if any.
fn typing_users(body: &Value, room: &str) -> Option<Vec<String>> {
    room_events(body, room, "ephemeral")
        .iter()
        .find(|e| e["type"] == "m.typing")
        .map(|e| e["content"]["user_ids"].as_array().unwrap().iter().map(|u| u.as_str().unwrap().to_owned()).collect())
}

/// The `m.receipt` content in the joined room's ephemeral events, if any.
fn receipts(body: &Value, room: &str) -> Option<Value> {
    room_events(body, room, "ephemeral").into_iter().find(|e| e["type"] == "m.receipt").map(|e| e["content"].clone())
}

const ALICE: &str = "@alice:localhost";
const BOB: &str = "@bob:localhost";

#[tokio::test]
async fn initial_then_incremental_sync() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        s.message(&room, ALICE, "one").await;
        s.message(&room, ALICE, "two").await;
        let last = s.message(&room, ALICE, "three").await;
        s.settle(&alice, &last).await;

        let initial = s.sync(&alice, "").await;
        let joined = &initial["rooms"]["join"][&room];
        // The whole room fits the timeline, from its creation: no state before it.
        assert_eq!(joined["state"]["events"], json!([]), "[{}] {joined}", s.name);
        let tl = timeline(&initial, "join", &room);
        assert_eq!(bodies(tl), ["one", "two", "three"], "[{}]", s.name);
        assert_eq!(types(tl)[..2], ["m.room.create", "m.room.member"]);
        assert_eq!(tl[1]["state_key"], ALICE);
        assert!(tl.iter().all(|e| e.get("room_id").is_none() && e.get("hashes").is_none()));
        assert_eq!(joined["timeline"]["limited"], false);
        for key in ["account_data", "presence", "to_device", "device_lists"] {
            assert!(initial[key].is_object(), "[{}] {key} missing", s.name);
        }
        let since = initial["next_batch"].as_str().unwrap().to_owned();

        // Nothing new: an incremental sync without timeout is empty.
        let quiet = s.sync(&alice, &format!("since={since}")).await;
        assert!(quiet["rooms"]["join"].as_object().unwrap().is_empty(), "[{}] {quiet}", s.name);

        s.message(&room, ALICE, "four").await;
        let last = s.message(&room, ALICE, "five").await;
        s.settle(&alice, &last).await;
        let incremental = s.sync(&alice, &format!("since={since}")).await;
        let tl = timeline(&incremental, "join", &room);
        assert_eq!(bodies(tl), ["four", "five"], "[{}]", s.name);
        assert_eq!(tl.len(), 2);
        assert!(incremental["rooms"]["join"][&room]["state"]["events"].as_array().unwrap().is_empty());
        assert_ne!(incremental["next_batch"].as_str().unwrap(), since);
    }
}

#[tokio::test]
async fn hundred_messages_arrive_in_order_through_sync() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        s.membership(&room, ALICE, BOB, "invite").await;
        let join = s.membership(&room, BOB, BOB, "join").await;
        s.settle(&alice, &join).await;
        let since = s.sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();

        let sender = {
            let s_bus = s.bus.clone();
            let room = room.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let event_id = format!("${}", alphanumeric(43));
                    let pdu = json!({"type": "m.room.message", "sender": ALICE, "room_id": room,
                        "content": {"msgtype": "m.text", "body": format!("m{i}")}, "origin_server_ts": 1});
                    let record = OutputRecord::NewRoomEvent(NewRoomEvent {
                        event: StoredEvent {
                            event_id: event_id.as_str().try_into().unwrap(),
                            room_id: room.as_str().try_into().unwrap(),
                            pdu,
                        },
                        room_version: "12".to_owned(),
                        state_delta: StateDelta::default(),
                        txn: None,
                        historical: false,
                    });
                    s_bus.produce_json(OUTPUT_TOPIC, &room, &record).await.unwrap();
                }
            })
        };
        let got = bodies(&receive_messages(&s, &bob, &room, &since, 100).await);
        sender.await.unwrap();
        let want: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
        assert_eq!(got, want, "[{}]", s.name);
    }
}

/// Follow `/sync` from `since` like a client until `n` messages of `room`
/// arrived, filling gaps of limited timelines from `prev_batch` with
/// `/messages`; the messages in the order received.
async fn receive_messages(s: &Server, token: &str, room: &str, since: &str, n: usize) -> Vec<Value> {
    let mut since = since.to_owned();
    let mut seen = std::collections::HashSet::new();
    let mut got: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < n {
        assert!(Instant::now() < deadline, "[{}] only {} messages arrived", s.name, got.len());
        let body = s.sync(token, &format!("since={since}&timeout=5000")).await;
        since = body["next_batch"].as_str().unwrap().to_owned();
        let Some(room_body) = body["rooms"]["join"].get(room) else { continue };
        let mut batch = room_body["timeline"]["events"].as_array().unwrap().clone();
        if room_body["timeline"]["limited"] == true {
            // Fill the gap from prev_batch back to what we already have.
            let mut from = room_body["timeline"]["prev_batch"].as_str().unwrap().to_owned();
            let mut earlier = Vec::new();
            'fill: loop {
                let path = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=7&from={from}");
                let (status, page) = s.get(&path, Some(token)).await;
                assert_eq!(status, 200, "{page}");
                for event in page["chunk"].as_array().unwrap() {
                    if seen.contains(event["event_id"].as_str().unwrap()) {
                        break 'fill;
                    }
                    earlier.push(event.clone());
                }
                match page["end"].as_str() {
                    Some(end) => from = end.to_owned(),
                    None => break,
                }
            }
            earlier.reverse();
            earlier.append(&mut batch);
            batch = earlier;
        }
        for event in batch {
            if seen.insert(event["event_id"].as_str().unwrap().to_owned()) && event["type"] == "m.room.message" {
                got.push(event);
            }
        }
    }
    got
}

#[tokio::test]
async fn long_poll_wakes_on_a_new_event() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let last = s.message(&room, ALICE, "before").await;
        s.settle(&alice, &last).await;
        let since = s.sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();

        let started = Instant::now();
        let poll = {
            let base = s.base.clone();
            let alice = alice.clone();
            tokio::spawn(async move {
                let url = format!("{base}/_matrix/client/v3/sync?since={since}&timeout=30000");
                reqwest::Client::new().get(url).bearer_auth(alice).send().await.unwrap().json::<Value>().await.unwrap()
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "[{}] long poll returned before any event", s.name);
        let event = s.message(&room, ALICE, "wake up").await;
        let body = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("long poll did not wake").unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(ids(timeline(&body, "join", &room)), [event], "[{}]", s.name);
    }
}

#[tokio::test]
async fn long_poll_times_out_empty_and_ignores_other_rooms() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let alice_room = s.create_room(ALICE).await;
        let bob_room = s.create_room(BOB).await;
        let last = s.message(&bob_room, BOB, "x").await;
        s.settle(&bob, &last).await;
        let since = s.sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
        let poll = {
            let base = s.base.clone();
            let alice = alice.clone();
            let since = since.clone();
            tokio::spawn(async move {
                let url = format!("{base}/_matrix/client/v3/sync?since={since}&timeout=1500");
                reqwest::Client::new().get(url).bearer_auth(alice).send().await.unwrap().json::<Value>().await.unwrap()
            })
        };
        s.message(&bob_room, BOB, "not for alice").await;
        let body = poll.await.unwrap();
        assert!(body["rooms"]["join"].as_object().unwrap().is_empty(), "[{}] {body}", s.name);
        assert!(body["rooms"]["join"].get(&alice_room).is_none());
    }
}

#[tokio::test]
async fn limited_timeline_then_messages_backwards() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let mut last = String::new();
        for i in 0..25 {
            last = s.message(&room, ALICE, &format!("m{i}")).await;
        }
        s.settle(&alice, &last).await;
        let initial = s.sync(&alice, "").await;
        let joined = &initial["rooms"]["join"][&room];
        assert_eq!(joined["timeline"]["limited"], true, "[{}]", s.name);
        let tl = timeline(&initial, "join", &room);
        assert_eq!(bodies(tl), (15..25).map(|i| format!("m{i}")).collect::<Vec<_>>());
        // A limited timeline starts after the state: state holds the room's name and members.
        let state_types = types(joined["state"]["events"].as_array().unwrap());
        for t in ["m.room.create", "m.room.member", "m.room.name", "m.room.join_rules", "m.room.power_levels"] {
            assert!(state_types.contains(&t.to_owned()), "[{}] {t} missing from {state_types:?}", s.name);
        }

        let mut from = joined["timeline"]["prev_batch"].as_str().unwrap().to_owned();
        let mut earlier = Vec::new();
        let mut pages = 0;
        loop {
            let (status, page) = s
                .get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&from={from}&limit=10"), Some(&alice))
                .await;
            assert_eq!(status, 200, "{page}");
            assert_eq!(page["start"], from.as_str());
            assert_eq!(page["state"], json!([]));
            let chunk = page["chunk"].as_array().unwrap();
            assert!(chunk.iter().all(|e| e["room_id"] == room.as_str()));
            earlier.extend(chunk.iter().cloned());
            pages += 1;
            match page["end"].as_str() {
                Some(end) => from = end.to_owned(),
                None => break,
            }
            assert!(pages < 10);
        }
        earlier.reverse();
        let mut expected: Vec<String> = vec![];
        expected.extend((0..15).map(|i| format!("m{i}")));
        assert_eq!(bodies(&earlier), expected, "[{}]", s.name);
        // History is `shared` by default: Alice reads back to the room's creation.
        assert_eq!(types(&earlier)[..2], ["m.room.create", "m.room.member"], "[{}]", s.name);

        // Forwards from the start reaches the newest event and then stops.
        let (status, page) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=1000"), Some(&alice)).await;
        assert_eq!(status, 200);
        assert_eq!(bodies(page["chunk"].as_array().unwrap()).len(), 25);
        assert!(page.get("end").is_none(), "{page}");
        let (_, page) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=3"), Some(&alice)).await;
        assert_eq!(page["chunk"].as_array().unwrap().len(), 3);
        assert!(page["end"].is_string());
        // r0 answers too.
        let (status, _) = s.get(&format!("/_matrix/client/r0/rooms/{room}/messages?dir=b"), Some(&alice)).await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn invite_join_and_leave_sections() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        let hv = json!({"history_visibility": "joined"});
        let hv = s.emit(&room, ALICE, "m.room.history_visibility", Some(""), hv).await;
        s.message(&room, ALICE, "before bob").await;
        let bob_since = s.sync(&bob, "").await["next_batch"].as_str().unwrap().to_owned();
        let invite = s.membership(&room, ALICE, BOB, "invite").await;
        s.settle(&alice, &invite).await;

        let body = s.sync(&bob, &format!("since={bob_since}&timeout=5000")).await;
        let invite_state = body["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap();
        let t = types(invite_state);
        for want in ["m.room.create", "m.room.join_rules", "m.room.name", "m.room.member"] {
            assert!(t.contains(&want.to_owned()), "[{}] {want} not in {t:?}", s.name);
        }
        assert!(!t.contains(&"m.room.power_levels".to_owned()));
        let member = invite_state.iter().find(|e| e["type"] == "m.room.member").unwrap();
        assert_eq!(member["state_key"], BOB);
        assert_eq!(member["content"]["membership"], "invite");
        assert!(member.get("event_id").is_none(), "stripped state carries no event id");
        assert!(body["rooms"]["join"].get(&room).is_none());
        let bob_since = body["next_batch"].as_str().unwrap().to_owned();
        // The invite appears once, not again on the next sync.
        let again = s.sync(&bob, &format!("since={bob_since}")).await;
        assert!(again["rooms"]["invite"].get(&room).is_none());

        let join = s.membership(&room, BOB, BOB, "join").await;
        let body = s.sync(&bob, &format!("since={bob_since}&timeout=5000")).await;
        let joined = &body["rooms"]["join"][&room];
        assert!(body["rooms"]["invite"].get(&room).is_none());
        // The room's setup (`shared` before the visibility became `joined`),
        // then his own invite (he could see it) and his join: nothing said before.
        let tl = joined["timeline"]["events"].as_array().unwrap();
        assert_eq!(types(tl)[0], "m.room.create", "[{}] {body}", s.name);
        assert_eq!(ids(tl)[tl.len() - 3..], [hv.clone(), invite.clone(), join.clone()], "[{}] {body}", s.name);
        assert_eq!(joined["state"]["events"], json!([]));
        // Bob does not see what was said before he joined.
        assert!(!body.to_string().contains("before bob"));
        let bob_since = body["next_batch"].as_str().unwrap().to_owned();

        s.message(&room, ALICE, "while bob is here").await;
        let leave = s.membership(&room, BOB, BOB, "leave").await;
        let after_leave = s.message(&room, ALICE, "after bob left").await;
        s.settle(&alice, &after_leave).await;
        let body = s.sync(&bob, &format!("since={bob_since}")).await;
        assert!(body["rooms"]["join"].get(&room).is_none(), "[{}] {body}", s.name);
        let tl = timeline(&body, "leave", &room);
        assert_eq!(bodies(tl), ["while bob is here"]);
        assert_eq!(ids(tl).last().unwrap(), &leave);
        let bob_since = body["next_batch"].as_str().unwrap().to_owned();
        let quiet = s.sync(&bob, &format!("since={bob_since}")).await;
        assert!(quiet["rooms"]["leave"].get(&room).is_none() && quiet["rooms"]["join"].get(&room).is_none());

        // /messages for Bob ends at his leave and starts at his join.
        let (status, page) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), Some(&bob)).await;
        assert_eq!(status, 200, "{page}");
        let chunk = page["chunk"].as_array().unwrap();
        assert_eq!(ids(chunk)[..5], [leave.clone(), ids(chunk)[1].clone(), join.clone(), invite.clone(), hv.clone()]);
        assert_eq!(bodies(chunk), ["while bob is here"]);
        assert_eq!(chunk.last().unwrap()["type"], "m.room.create");
        // Initial sync leaves left rooms out unless the filter asks.
        let initial = s.sync(&bob, "").await;
        assert!(initial["rooms"]["leave"].get(&room).is_none());
        let with_leave = s.sync(&bob, &format!("filter={}", enc(r#"{"room":{"include_leave":true}}"#))).await;
        assert_eq!(ids(timeline(&with_leave, "leave", &room)).last().unwrap(), &leave);

        // Someone who never joined may not read the room.
        let charlie = s.register("charlie").await;
        let (status, err) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&charlie)).await;
        assert_eq!((status, err["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{}]", s.name);
    }
}

#[tokio::test]
async fn transaction_id_only_for_the_sending_device() {
    for s in servers().await {
        s.register("alice").await;
        let phone = s.login("alice", "PHONE").await;
        let laptop = s.login("alice", "LAPTOP").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        s.membership(&room, ALICE, BOB, "invite").await;
        s.membership(&room, BOB, BOB, "join").await;
        let txn = TxnRef { device_id: "PHONE".to_owned(), txn_id: "txn-1".to_owned() };
        let (event_id, _) = s
            .emit_with(&room, ALICE, "m.room.message", None, json!({"msgtype": "m.text", "body": "hi"}), Some(txn))
            .await;
        s.settle(&phone, &event_id).await;
        let find = |body: &Value| {
            timeline(body, "join", &room).iter().find(|e| e["event_id"] == event_id.as_str()).cloned().unwrap()
        };
        let on_phone = find(&s.sync(&phone, "").await);
        assert_eq!(on_phone["unsigned"]["transaction_id"], "txn-1", "[{}] {on_phone}", s.name);
        let on_laptop = find(&s.sync(&laptop, "").await);
        assert!(on_laptop["unsigned"].get("transaction_id").is_none(), "[{}] {on_laptop}", s.name);
        let for_bob = find(&s.sync(&bob, "").await);
        assert!(for_bob["unsigned"].get("transaction_id").is_none());
        let (_, page) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=1"), Some(&phone)).await;
        assert_eq!(page["chunk"][0]["unsigned"]["transaction_id"], "txn-1");
    }
}

#[tokio::test]
async fn redelivered_records_and_poison_do_no_harm() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let (event_id, record) =
            s.emit_with(&room, ALICE, "m.room.message", None, json!({"msgtype": "m.text", "body": "once"}), None).await;
        s.settle(&alice, &event_id).await;
        let since = s.sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
        // The same record again, an undecodable one, and a state event without a type.
        s.bus.produce_json(OUTPUT_TOPIC, &room, &record).await.unwrap();
        s.bus.produce(OUTPUT_TOPIC, &room, b"{not json".to_vec()).await.unwrap();
        let after = s.message(&room, ALICE, "after").await;
        s.settle(&alice, &after).await;
        let body = s.sync(&alice, &format!("since={since}")).await;
        assert_eq!(ids(timeline(&body, "join", &room)), [after], "[{}]", s.name);
        let all = s.sync(&alice, "").await;
        let count = ids(timeline(&all, "join", &room)).iter().filter(|id| **id == event_id).count();
        assert_eq!(count, 1);
    }
}

#[tokio::test]
async fn filters_round_trip_and_apply() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let mut last = String::new();
        for i in 0..5 {
            last = s.message(&room, ALICE, &format!("m{i}")).await;
        }
        s.settle(&alice, &last).await;
        let filter =
            json!({"room": {"timeline": {"limit": 2}, "state": {"types": ["m.room.name"]}}, "presence": {"types": []}});
        let path = format!("/_matrix/client/v3/user/{ALICE}/filter");
        let (status, created) = s.request(reqwest::Method::POST, &path, Some(&alice), Some(&filter.to_string())).await;
        assert_eq!(status, 200, "[{}] {created}", s.name);
        let filter_id = created["filter_id"].as_str().unwrap().to_owned();
        let (status, fetched) = s.get(&format!("{path}/{filter_id}"), Some(&alice)).await;
        assert_eq!(status, 200);
        assert_eq!(fetched, filter);
        let (status, _) = s.get(&format!("/_matrix/client/r0/user/{ALICE}/filter/{filter_id}"), Some(&alice)).await;
        assert_eq!(status, 200);

        let body = s.sync(&alice, &format!("filter={filter_id}")).await;
        let joined = &body["rooms"]["join"][&room];
        assert_eq!(bodies(timeline(&body, "join", &room)), ["m3", "m4"], "[{}]", s.name);
        assert_eq!(joined["timeline"]["limited"], true);
        assert_eq!(types(joined["state"]["events"].as_array().unwrap()), ["m.room.name"]);

        let inline = enc(r#"{"room":{"timeline":{"limit":3,"types":["m.room.message"]}}}"#);
        let body = s.sync(&alice, &format!("filter={inline}")).await;
        assert_eq!(bodies(timeline(&body, "join", &room)), ["m2", "m3", "m4"]);
        assert_eq!(types(timeline(&body, "join", &room)), ["m.room.message"; 3]);

        let not_rooms = enc(&json!({"room": {"not_rooms": [room]}}).to_string());
        let body = s.sync(&alice, &format!("filter={not_rooms}")).await;
        assert!(body["rooms"]["join"].get(&room).is_none());
    }
}

#[tokio::test]
async fn requests_are_refused_with_the_right_errors() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        let expect = |what: &str, got: (u16, Value), status: u16, code: &str| {
            assert_eq!((got.0, got.1["errcode"].as_str()), (status, Some(code)), "[{}] {what}: {}", s.name, got.1);
        };
        let v3 = "/_matrix/client/v3";
        expect("no token", s.get(&format!("{v3}/sync"), None).await, 401, "M_MISSING_TOKEN");
        expect("unknown token", s.get(&format!("{v3}/sync"), Some("nope")).await, 401, "M_UNKNOWN_TOKEN");
        expect(
            "no token on messages",
            s.get(&format!("{v3}/rooms/{room}/messages?dir=b"), None).await,
            401,
            "M_MISSING_TOKEN",
        );
        expect("bad since", s.get(&format!("{v3}/sync?since=garbage"), Some(&alice)).await, 400, "M_INVALID_PARAM");
        expect("bad timeout", s.get(&format!("{v3}/sync?timeout=soon"), Some(&alice)).await, 400, "M_INVALID_PARAM");
        expect(
            "unknown sync filter",
            s.get(&format!("{v3}/sync?filter=999"), Some(&alice)).await,
            400,
            "M_INVALID_PARAM",
        );
        expect("bad inline filter", s.get(&format!("{v3}/sync?filter=%7Bnope"), Some(&alice)).await, 400, "M_NOT_JSON");
        expect(
            "bad dir",
            s.get(&format!("{v3}/rooms/{room}/messages?dir=x"), Some(&alice)).await,
            400,
            "M_INVALID_PARAM",
        );
        expect("no dir", s.get(&format!("{v3}/rooms/{room}/messages"), Some(&alice)).await, 400, "M_INVALID_PARAM");
        expect(
            "bad from",
            s.get(&format!("{v3}/rooms/{room}/messages?dir=b&from=zz"), Some(&alice)).await,
            400,
            "M_INVALID_PARAM",
        );
        expect("non-member", s.get(&format!("{v3}/rooms/{room}/messages?dir=b"), Some(&bob)).await, 403, "M_FORBIDDEN");

        let filter_path = format!("{v3}/user/{ALICE}/filter");
        let post = |token: &str, path: &str, body: &str| {
            let (token, path, body) = (token.to_owned(), path.to_owned(), body.to_owned());
            let s = &s;
            async move { s.request(reqwest::Method::POST, &path, Some(&token), Some(&body)).await }
        };
        expect("filter for another user", post(&bob, &filter_path, "{}").await, 403, "M_FORBIDDEN");
        expect("malformed filter", post(&alice, &filter_path, "{not json").await, 400, "M_NOT_JSON");
        expect(
            "filter of wrong shape",
            post(&alice, &filter_path, r#"{"room": {"timeline": {"limit": "ten"}}}"#).await,
            400,
            "M_BAD_JSON",
        );
        expect("filter not an object", post(&alice, &filter_path, "[1]").await, 400, "M_BAD_JSON");
        expect("unknown filter", s.get(&format!("{filter_path}/12345"), Some(&alice)).await, 404, "M_NOT_FOUND");
        expect("non-numeric filter", s.get(&format!("{filter_path}/abc"), Some(&alice)).await, 404, "M_NOT_FOUND");
        let (_, created) = post(&alice, &filter_path, "{}").await;
        let id = created["filter_id"].as_str().unwrap();
        expect("someone else's filter", s.get(&format!("{filter_path}/{id}"), Some(&bob)).await, 403, "M_FORBIDDEN");
    }
}

#[tokio::test]
async fn logged_out_tokens_stop_working() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let other = s.login("alice", "OTHER").await;
        s.sync(&alice, "").await; // cached now
        s.sync(&other, "").await;
        let response = s
            .http
            .post(format!("{}/_matrix/client/v3/logout", s.client_base))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = s.get("/_matrix/client/v3/sync", Some(&alice)).await;
            if status == 401 {
                assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN");
                break;
            }
            assert!(Instant::now() < deadline, "[{}] logged-out token still accepted", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The other device's token still works.
        s.sync(&other, "").await;
    }
}

/// What a user joining later sees of a room's history, through `/sync` and
/// `/messages`, under each `m.room.history_visibility`; and nothing after
/// they leave.
#[tokio::test]
async fn history_visibility_decides_what_a_later_member_sees() {
    let everything = r#"{"room":{"timeline":{"limit":1000},"include_leave":true}}"#;
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        for (visibility, expected) in [
            ("shared", vec!["before invite", "after invite", "after join"]),
            ("invited", vec!["after invite", "after join"]),
            ("joined", vec!["after join"]),
            ("world_readable", vec!["before invite", "after invite", "after join"]),
        ] {
            let room = s.create_room(ALICE).await;
            let hv = json!({ "history_visibility": visibility });
            s.emit(&room, ALICE, "m.room.history_visibility", Some(""), hv).await;
            s.message(&room, ALICE, "before invite").await;
            let invite = s.membership(&room, ALICE, BOB, "invite").await;
            s.message(&room, ALICE, "after invite").await;
            let join = s.membership(&room, BOB, BOB, "join").await;
            let last = s.message(&room, ALICE, "after join").await;
            s.settle(&bob, &last).await;
            let name = format!("[{}] {visibility}", s.name);

            let body = s.sync(&bob, &format!("filter={}", enc(everything))).await;
            let tl = timeline(&body, "join", &room);
            assert_eq!(bodies(tl), expected, "{name}");
            // His own membership events, whatever the visibility.
            assert!(ids(tl).contains(&invite) && ids(tl).contains(&join), "{name}");
            // What came before the visibility was set was `shared` (the
            // default), so he sees the room from its creation on, with no
            // state before that.
            assert_eq!(tl[0]["type"], "m.room.create", "{name}");
            assert_eq!(body["rooms"]["join"][&room]["state"]["events"], json!([]), "{name}");
            let (status, page) =
                s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100"), Some(&bob)).await;
            assert_eq!(status, 200, "{name}: {page}");
            let mut chunk = page["chunk"].as_array().unwrap().clone();
            chunk.reverse();
            assert_eq!(ids(&chunk), ids(tl), "{name}");

            // After he leaves, nothing more.
            let leave = s.membership(&room, BOB, BOB, "leave").await;
            let after = s.message(&room, ALICE, "after leave").await;
            s.settle(&alice, &after).await;
            let body = s.sync(&bob, &format!("filter={}", enc(everything))).await;
            let tl = timeline(&body, "leave", &room);
            assert_eq!(ids(tl).last(), Some(&leave), "{name}");
            assert_eq!(bodies(tl), expected, "{name}");
            let (_, page) =
                s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=100"), Some(&bob)).await;
            let chunk = page["chunk"].as_array().unwrap();
            assert_eq!(ids(chunk).last(), Some(&leave), "{name}");
            assert_eq!(bodies(chunk), expected, "{name}");
        }
    }
}

/// Through the real client API and room server: a creator's timeline starts
/// with the room's creation; a world-readable room can be read by anyone
/// through `/messages`, a shared one not.
#[tokio::test]
async fn creation_first_and_world_readable_rooms_through_the_room_server() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let charlie = s.register("charlie").await;
        let created = s.client(reqwest::Method::POST, "/createRoom", &alice, json!({"preset": "private_chat"})).await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        let path = format!("/rooms/{room}/send/m.room.message/t1");
        let sent = s.client(reqwest::Method::PUT, &path, &alice, json!({"msgtype": "m.text", "body": "hello"})).await;
        s.settle(&alice, sent["event_id"].as_str().unwrap()).await;
        let body = s.sync(&alice, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":100}}}"#))).await;
        let tl = timeline(&body, "join", &room);
        assert_eq!(tl[0]["type"], "m.room.create", "[{}] {body}", s.name);
        assert_eq!(bodies(tl), ["hello"]);
        assert_eq!(body["rooms"]["join"][&room]["state"]["events"], json!([]), "[{}]", s.name);

        let messages = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=100");
        let (status, _) = s.get(&messages, Some(&charlie)).await;
        assert_eq!(status, 403, "[{}] a shared room is not readable by non-members", s.name);
        let path = format!("/rooms/{room}/state/m.room.history_visibility/");
        let body = json!({"history_visibility": "world_readable"});
        let changed = s.client(reqwest::Method::PUT, &path, &alice, body).await;
        let path = format!("/rooms/{room}/send/m.room.message/t2");
        let sent = s.client(reqwest::Method::PUT, &path, &alice, json!({"msgtype": "m.text", "body": "public"})).await;
        s.settle(&alice, sent["event_id"].as_str().unwrap()).await;
        let (status, page) = s.get(&messages, Some(&charlie)).await;
        assert_eq!(status, 200, "[{}] {page}", s.name);
        let chunk = page["chunk"].as_array().unwrap();
        // From the change to world_readable on: what came before was only shared.
        assert_eq!(ids(chunk).last().map(String::as_str), changed["event_id"].as_str(), "[{}]", s.name);
        assert_eq!(bodies(chunk), ["public"]);
    }
}

/// The whole path a client takes: accounts and room commands through the
/// client API, events built by the room server, read back through `/sync`.
#[tokio::test]
async fn end_to_end_through_client_api_and_room_server() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let client = |method: reqwest::Method, path: String, token: &str, body: Value| {
            let request = s.http.request(method, format!("{}/_matrix/client/v3{path}", s.client_base));
            let request = request.bearer_auth(token).json(&body);
            async move {
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                assert_eq!(status, 200, "[{}] {path}: {body}", s.name);
                body
            }
        };
        let created = client(
            reqwest::Method::POST,
            "/createRoom".to_owned(),
            &alice,
            json!({"preset": "private_chat", "name": "E2E"}),
        )
        .await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        client(reqwest::Method::POST, format!("/rooms/{room}/invite"), &alice, json!({"user_id": BOB})).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let body = s.sync(&bob, "").await;
            if body["rooms"]["invite"].get(&room).is_some() {
                let t = types(body["rooms"]["invite"][&room]["invite_state"]["events"].as_array().unwrap());
                assert!(t.contains(&"m.room.name".to_owned()) && t.contains(&"m.room.create".to_owned()), "{t:?}");
                break;
            }
            assert!(Instant::now() < deadline, "[{}] invite never reached sync", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        client(reqwest::Method::POST, format!("/rooms/{room}/join"), &bob, json!({})).await;
        let since = loop {
            let body = s.sync(&bob, "").await;
            if body["rooms"]["join"].get(&room).is_some() {
                break body["next_batch"].as_str().unwrap().to_owned();
            }
            assert!(Instant::now() < deadline, "[{}] join never reached sync", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        };

        let sending = {
            let (http, base, alice, room) = (s.http.clone(), s.client_base.clone(), alice.clone(), room.clone());
            tokio::spawn(async move {
                for i in 0..100 {
                    let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/t{i}");
                    let body = json!({"msgtype": "m.text", "body": format!("m{i}")});
                    let response = http.put(url).bearer_auth(&alice).json(&body).send().await.unwrap();
                    assert_eq!(response.status().as_u16(), 200);
                }
            })
        };
        let received = receive_messages(&s, &bob, &room, &since, 100).await;
        sending.await.unwrap();
        assert_eq!(bodies(&received), (0..100).map(|i| format!("m{i}")).collect::<Vec<_>>(), "[{}]", s.name);
        assert!(received.iter().all(|e| e["unsigned"].get("transaction_id").is_none()));

        // Alice's own device gets its transaction ids back.
        let body = s.sync(&alice, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":3}}}"#))).await;
        let tl = timeline(&body, "join", &room);
        let txns: Vec<&str> = tl.iter().map(|e| e["unsigned"]["transaction_id"].as_str().unwrap_or("")).collect();
        assert_eq!(txns, ["t97", "t98", "t99"], "[{}]", s.name);
    }
}

#[tokio::test]
async fn account_data_in_initial_incremental_and_long_polled_sync() {
    use reqwest::Method;
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let last = s.message(&room, ALICE, "x").await;
        s.settle(&alice, &last).await;
        let since0 = next_batch(&s.sync(&alice, "").await);
        let user = format!("/user/{ALICE}");

        s.client(Method::PUT, &format!("{user}/account_data/org.example.a"), &alice, json!({"v": 1})).await;
        s.client(Method::PUT, &format!("{user}/rooms/{room}/tags/u.work"), &alice, json!({"order": 1})).await;
        let tag = json!([{"type": "m.tag", "content": {"tags": {"u.work": {"order": 1}}}}]);
        let body = s.sync_until(&alice, "", |b| Value::Array(room_events(b, &room, "account_data")) == tag).await;
        assert_eq!(global_account_data(&body), &vec![json!({"type": "org.example.a", "content": {"v": 1}})]);
        let next = next_batch(&body);
        assert!(next.starts_with('s') && next.split('_').count() == 7, "{next}");

        // Incremental: what changed since the token, and nothing after.
        let body = s.sync(&alice, &format!("since={since0}")).await;
        assert_eq!(global_account_data(&body).len(), 1, "[{}] {body}", s.name);
        assert_eq!(Value::Array(room_events(&body, &room, "account_data")), tag);
        assert!(timeline(&body, "join", &room).is_empty());
        let body = s.sync(&alice, &format!("since={next}")).await;
        assert!(global_account_data(&body).is_empty(), "[{}] {body}", s.name);
        assert!(body["rooms"]["join"].as_object().unwrap().is_empty(), "[{}] {body}", s.name);

        // A change wakes a long poll, which gets only that change.
        let poll = s.long_poll(&alice, &next, 30_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "[{}] long poll returned before any change", s.name);
        s.client(Method::PUT, &format!("{user}/account_data/org.example.b"), &alice, json!({"v": 2})).await;
        let body = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("long poll woke").unwrap();
        assert_eq!(global_account_data(&body), &vec![json!({"type": "org.example.b", "content": {"v": 2}})]);
        assert!(body["rooms"]["join"].as_object().unwrap().is_empty(), "[{}] {body}", s.name);

        // Room account data alone brings the room into an incremental sync.
        let next = next_batch(&body);
        s.client(Method::PUT, &format!("{user}/rooms/{room}/account_data/org.example.r"), &alice, json!({"r": 1}))
            .await;
        let body = s.sync_until(&alice, &format!("since={next}"), |b| b["rooms"]["join"].get(&room).is_some()).await;
        assert_eq!(
            room_events(&body, &room, "account_data"),
            vec![json!({"type": "org.example.r", "content": {"r": 1}})]
        );
        assert!(timeline(&body, "join", &room).is_empty());
        assert!(global_account_data(&body).is_empty());

        // The single-stream token form still works (account data from the start).
        let events_pos = next.trim_start_matches('s').split('_').next().unwrap();
        let body = s.sync(&alice, &format!("since=s{events_pos}")).await;
        assert_eq!(global_account_data(&body).len(), 2, "[{}] {body}", s.name);
        for bad in ["s1_2", "s1_2_3_4_5_6_7_8", "s1_x_0_0", "s1_-2_0_0"] {
            let (status, body) = s.get(&format!("/_matrix/client/v3/sync?since={bad}"), Some(&alice)).await;
            assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{bad}");
        }
    }
}

#[tokio::test]
async fn typing_in_sync_wakes_members_and_lapses() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, since) = s.shared_room(&alice, &bob).await;
        let typing = format!("/rooms/{room}/typing/{ALICE}");

        let poll = s.long_poll(&bob, &since, 30_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "[{}] long poll returned before typing", s.name);
        s.client(Method::PUT, &typing, &alice, json!({"typing": true, "timeout": 30_000})).await;
        let body = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("long poll woke").unwrap();
        assert_eq!(typing_users(&body, &room), Some(vec![ALICE.to_owned()]), "[{}] {body}", s.name);
        let next = next_batch(&body);
        assert_eq!(typing_users(&s.sync(&bob, "").await, &room), Some(vec![ALICE.to_owned()]));
        let body = s.sync(&bob, &format!("since={next}")).await;
        assert!(body["rooms"]["join"].get(&room).is_none(), "[{}] unchanged typing repeated: {body}", s.name);

        s.client(Method::PUT, &typing, &alice, json!({"typing": false})).await;
        let body = s.sync_until(&bob, &format!("since={next}"), |b| typing_users(b, &room).is_some()).await;
        assert_eq!(typing_users(&body, &room), Some(vec![]));
        assert!(typing_users(&s.sync(&bob, "").await, &room).is_none(), "nobody types: no m.typing initially");

        // Typing lapses after its timeout, and that wakes the members too.
        let next = next_batch(&body);
        s.client(Method::PUT, &typing, &alice, json!({"typing": true, "timeout": 1500})).await;
        let body = s.sync_until(&bob, &format!("since={next}"), |b| typing_users(b, &room).is_some()).await;
        assert_eq!(typing_users(&body, &room), Some(vec![ALICE.to_owned()]));
        let body = s.sync(&bob, &format!("since={}&timeout=10000", next_batch(&body))).await;
        assert_eq!(typing_users(&body, &room), Some(vec![]), "[{}] {body}", s.name);

        // A profile change reaches the room as a new member event of alice's.
        let next = next_batch(&body);
        s.client(Method::PUT, &format!("/profile/{ALICE}/displayname"), &alice, json!({"displayname": "Alice"})).await;
        let is_member = |e: &Value| e["type"] == "m.room.member" && e["state_key"] == ALICE;
        let body = s
            .sync_until(&bob, &format!("since={next}"), |b| {
                b["rooms"]["join"][&room]["timeline"]["events"].as_array().is_some_and(|t| t.iter().any(is_member))
            })
            .await;
        let member = timeline(&body, "join", &room).iter().find(|e| is_member(e)).unwrap();
        assert_eq!(member["content"]["displayname"], "Alice");
        assert_eq!(member["content"]["membership"], "join");
    }
}

#[tokio::test]
async fn receipts_in_sync_with_private_ones_for_their_owner() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let send = format!("/rooms/{room}/send/m.room.message/t1");
        let sent = s.client(Method::PUT, &send, &alice, json!({"body": "hi"})).await;
        let event_id = sent["event_id"].as_str().unwrap().to_owned();
        s.settle(&alice, &event_id).await;
        let since = next_batch(&s.sync(&alice, "").await);

        let poll = s.long_poll(&alice, &since, 30_000);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "[{}] long poll returned before the receipt", s.name);
        s.client(Method::POST, &format!("/rooms/{room}/receipt/m.read/{event_id}"), &bob, json!({})).await;
        let body = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("long poll woke").unwrap();
        let content = receipts(&body, &room).unwrap_or_else(|| panic!("[{}] no receipt: {body}", s.name));
        assert!(content[&event_id]["m.read"][BOB]["ts"].is_u64(), "{content}");
        let next = next_batch(&body);

        s.client(
            Method::POST,
            &format!("/rooms/{room}/receipt/m.read.private/{event_id}"),
            &bob,
            json!({"thread_id": "main"}),
        )
        .await;
        s.client(Method::POST, &format!("/rooms/{room}/read_markers"), &bob, json!({"m.fully_read": event_id})).await;
        let body = s
            .sync_until(&bob, "", |b| {
                receipts(b, &room).is_some_and(|c| c[&event_id].get("m.read.private").is_some())
                    && room_events(b, &room, "account_data").iter().any(|e| e["type"] == "m.fully_read")
            })
            .await;
        let content = receipts(&body, &room).unwrap();
        assert_eq!(content[&event_id]["m.read.private"][BOB]["thread_id"], "main");
        assert!(content[&event_id]["m.read"][BOB].is_object());
        let marker = room_events(&body, &room, "account_data");
        assert_eq!(marker, vec![json!({"type": "m.fully_read", "content": {"event_id": event_id}})]);

        // Alice never sees bob's private receipt, initial or incremental.
        for query in [String::new(), format!("since={next}")] {
            let body = s.sync(&alice, &query).await;
            let content = receipts(&body, &room).unwrap_or_default();
            assert!(content.get(&event_id).and_then(|e| e.get("m.read.private")).is_none(), "{body}");
            assert!(room_events(&body, &room, "account_data").is_empty(), "{body}");
        }
        // Nothing new for alice after the public receipt.
        let body = s.sync(&alice, &format!("since={next}")).await;
        assert!(body["rooms"]["join"].get(&room).is_none(), "[{}] {body}", s.name);
    }
}

#[tokio::test]
async fn redelivered_account_data_typing_and_receipts_change_nothing() {
    use myelin_clientapi::api::{
        ACCOUNT_DATA_TOPIC, AccountDataUpdate, RECEIPT_TOPIC, ReceiptUpdate, TYPING_TOPIC, TypingUpdate,
    };
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        let event_id = s.message(&room, ALICE, "read me").await;
        s.settle(&alice, &event_id).await;
        let data = AccountDataUpdate {
            user_id: ALICE.try_into().unwrap(),
            room_id: None,
            data_type: "org.example.once".to_owned(),
            content: json!({"n": 1}),
        };
        let receipt = ReceiptUpdate {
            room_id: room.as_str().try_into().unwrap(),
            user_id: ALICE.try_into().unwrap(),
            receipt_type: "m.read".to_owned(),
            event_id: event_id.as_str().try_into().unwrap(),
            thread_id: None,
            ts: 1,
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        let typing = TypingUpdate {
            room_id: room.as_str().try_into().unwrap(),
            user_id: ALICE.try_into().unwrap(),
            typing: true,
            expires_ms: now + 60_000,
        };
        let produce_all = async || {
            s.bus.produce_json(ACCOUNT_DATA_TOPIC, ALICE, &data).await.unwrap();
            s.bus.produce_json(RECEIPT_TOPIC, &room, &receipt).await.unwrap();
            s.bus.produce_json(TYPING_TOPIC, &room, &typing).await.unwrap();
        };
        produce_all().await;
        let body = s
            .sync_until(&alice, "", |b| {
                !global_account_data(b).is_empty() && receipts(b, &room).is_some() && typing_users(b, &room).is_some()
            })
            .await;
        let since = next_batch(&body);

        // The same records again, then a marker to know they were consumed.
        produce_all().await;
        s.bus.produce(ACCOUNT_DATA_TOPIC, ALICE, b"{not json".to_vec()).await.unwrap();
        let marker = AccountDataUpdate { data_type: "org.example.marker".to_owned(), ..data.clone() };
        s.bus.produce_json(ACCOUNT_DATA_TOPIC, ALICE, &marker).await.unwrap();
        let body = s.sync_until(&alice, &format!("since={since}"), |b| !global_account_data(b).is_empty()).await;
        assert_eq!(global_account_data(&body), &vec![json!({"type": "org.example.marker", "content": {"n": 1}})]);
        assert!(body["rooms"]["join"].get(&room).is_none(), "[{}] redelivery showed again: {body}", s.name);
    }
}

impl Server {
    /// A message sent through the client API; its event id.
    async fn send_text(&self, token: &str, room: &str, txn: &str, body: &str) -> String {
        let path = format!("/rooms/{room}/send/m.room.message/{txn}");
        let sent = self.client(reqwest::Method::PUT, &path, token, json!({"msgtype": "m.text", "body": body})).await;
        sent["event_id"].as_str().unwrap().to_owned()
    }

    /// A redaction sent through the client API; its event id.
    async fn redact(&self, token: &str, room: &str, event_id: &str, txn: &str) -> String {
        let path = format!("/rooms/{room}/redact/{}/{txn}", enc(event_id));
        let sent = self.client(reqwest::Method::PUT, &path, token, json!({"reason": "test"})).await;
        sent["event_id"].as_str().unwrap().to_owned()
    }

    async fn event(&self, token: &str, room: &str, event_id: &str) -> (u16, Value) {
        self.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(event_id)), Some(token)).await
    }
}

#[tokio::test]
async fn single_events_follow_history_visibility() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let body = json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]});
        let room =
            s.client(reqwest::Method::POST, "/createRoom", &alice, body).await["room_id"].as_str().unwrap().to_owned();
        let before = s.send_text(&alice, &room, "t1", "before bob").await;
        s.client(reqwest::Method::POST, &format!("/rooms/{room}/join"), &bob, json!({})).await;
        let after = s.send_text(&alice, &room, "t2", "after bob").await;
        s.settle(&bob, &after).await;

        let (status, event) = s.event(&bob, &room, &after).await;
        assert_eq!(status, 200, "[{}] {event}", s.name);
        assert_eq!(
            (event["event_id"].as_str(), event["room_id"].as_str()),
            (Some(after.as_str()), Some(room.as_str()))
        );
        assert_eq!(event["content"]["body"], "after bob");
        assert!(event.get("hashes").is_none() && event.get("signatures").is_none(), "{event}");
        // Before his join, never a member, or no such event: all look the same.
        for (token, event_id) in [(&bob, before.as_str()), (&carol, after.as_str()), (&bob, "$nosuchevent")] {
            let (status, body) = s.event(token, &room, event_id).await;
            assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "[{}] {body}", s.name);
        }
        let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{}", enc(&after)), None).await;
        assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "[{}]", s.name);
    }
}

#[tokio::test]
async fn context_pages_on_both_sides_with_state() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let created = s.client(reqwest::Method::POST, "/createRoom", &alice, json!({"name": "Context"})).await;
        let room = created["room_id"].as_str().unwrap().to_owned();
        let mut sent = Vec::new();
        for i in 0..10 {
            sent.push(s.send_text(&alice, &room, &format!("t{i}"), &format!("m{i}")).await);
        }
        s.settle(&alice, &sent[9]).await;

        let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?limit=4", enc(&sent[5]));
        let (status, context) = s.get(&path, Some(&alice)).await;
        assert_eq!(status, 200, "[{}] {context}", s.name);
        assert_eq!(context["event"]["event_id"], sent[5]);
        assert_eq!(bodies(context["events_before"].as_array().unwrap()), ["m4", "m3"]);
        assert_eq!(bodies(context["events_after"].as_array().unwrap()), ["m6", "m7"]);
        let state = types(context["state"].as_array().unwrap());
        assert!(state.contains(&"m.room.create".to_owned()) && state.contains(&"m.room.name".to_owned()), "{state:?}");

        // The tokens continue where the context stops, in each direction.
        let start = context["start"].as_str().unwrap();
        let (_, back) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2&from={start}"), Some(&alice)).await;
        assert_eq!(bodies(back["chunk"].as_array().unwrap()), ["m2", "m1"], "[{}] {back}", s.name);
        let end = context["end"].as_str().unwrap();
        let (_, forward) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=f&limit=2&from={end}"), Some(&alice)).await;
        assert_eq!(bodies(forward["chunk"].as_array().unwrap()), ["m8", "m9"], "[{}] {forward}", s.name);

        let filtered = format!("{path}&filter={}", enc(r#"{"lazy_load_members":true,"not_types":["m.room.message"]}"#));
        let (status, context) = s.get(&filtered, Some(&alice)).await;
        assert_eq!(status, 200, "[{}] {context}", s.name);
        assert!(context["events_before"].as_array().unwrap().iter().all(|e| e["type"] != "m.room.message"));

        for (query, code) in [("limit=x", "M_INVALID_PARAM"), ("filter=notjson", "M_BAD_JSON")] {
            let path = format!("/_matrix/client/v3/rooms/{room}/context/{}?{query}", enc(&sent[5]));
            let (status, body) = s.get(&path, Some(&alice)).await;
            assert_eq!((status, body["errcode"].as_str()), (400, Some(code)), "[{}] {query}: {body}", s.name);
        }
        let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/context/%24unknown"), Some(&alice)).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "[{}]", s.name);
    }
}

#[tokio::test]
async fn redactions_strip_events_their_sender_may_redact() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let by_bob = s.send_text(&bob, &room, "b1", "bob's secret").await;
        let by_alice = s.send_text(&alice, &room, "a1", "alice's words").await;
        let own = s.send_text(&bob, &room, "b2", "bob regrets this").await;

        // Bob (power 0) may not redact Alice's event; Alice (100) may redact his.
        let path = format!("/rooms/{room}/redact/{}/r1", enc(&by_alice));
        let (status, refused) = s.client_raw(reqwest::Method::PUT, &path, &bob, json!({})).await;
        assert_eq!((status, refused["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{}] {refused}", s.name);
        let by_moderator = s.redact(&alice, &room, &by_bob, "r2").await;
        let by_author = s.redact(&bob, &room, &own, "r3").await;
        s.settle(&bob, &by_author).await;

        let (_, kept) = s.event(&bob, &room, &by_alice).await;
        assert_eq!(kept["content"]["body"], "alice's words", "[{}]", s.name);
        for (event_id, because) in [(&by_bob, &by_moderator), (&own, &by_author)] {
            let (status, stripped) = s.event(&alice, &room, event_id).await;
            assert_eq!(status, 200, "[{}] {stripped}", s.name);
            assert_eq!(stripped["content"], json!({}), "[{}] {stripped}", s.name);
            assert_eq!(stripped["unsigned"]["redacted_because"]["event_id"], *because);
            assert_eq!(stripped["unsigned"]["redacted_because"]["content"]["reason"], "test");
        }
        // Sync serves the stripped form too.
        let body = s.sync(&bob, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":50}}}"#))).await;
        let texts = bodies(timeline(&body, "join", &room));
        assert!(texts.contains(&"alice's words".to_owned()), "[{}] {texts:?}", s.name);
        assert!(!texts.iter().any(|t| t.starts_with("bob")), "[{}] {texts:?}", s.name);
        // Clients read a redaction's target at the top level, in v11+ rooms too
        // (where the PDU has it only in its content); other events have none.
        let targets: Vec<(&Value, &Value)> =
            timeline(&body, "join", &room).iter().map(|e| (&e["event_id"], &e["redacts"])).collect();
        for (redaction, target) in [(&by_moderator, &by_bob), (&by_author, &own)] {
            assert!(targets.contains(&(&json!(redaction), &json!(target))), "[{}] {targets:?}", s.name);
        }
        assert_eq!(targets.iter().filter(|(_, target)| !target.is_null()).count(), 2, "[{}] {targets:?}", s.name);
    }
}

/// The `to_device` events of a sync response.
fn to_device_events(body: &Value) -> Vec<Value> {
    body["to_device"]["events"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn to_device_messages_wait_for_their_device_until_acknowledged() {
    for s in servers().await {
        let alice_laptop = s.register("alice").await;
        let alice_phone = s.login("alice", "PHONE").await;
        let bob = s.register("bob").await;
        let initial = s.sync(&alice_phone, "").await;
        let since = next_batch(&initial);

        let to_all = json!({"messages": {ALICE: {"*": {"n": 1}}}});
        s.client(reqwest::Method::PUT, "/sendToDevice/m.test/t1", &bob, to_all.clone()).await;
        // A retried request delivers nothing twice.
        s.client(reqwest::Method::PUT, "/sendToDevice/m.test/t1", &bob, to_all).await;
        let to_phone = json!({"messages": {ALICE: {"PHONE": {"n": 2}}}});
        s.client(reqwest::Method::PUT, "/sendToDevice/m.test/t2", &bob, to_phone).await;

        let phone = s.sync_until(&alice_phone, &format!("since={since}"), |b| to_device_events(b).len() >= 2).await;
        let events = to_device_events(&phone);
        assert_eq!(events.len(), 2, "[{}] {events:?}", s.name);
        assert_eq!((events[0]["sender"].as_str(), events[0]["type"].as_str()), (Some(BOB), Some("m.test")));
        assert_eq!((events[0]["content"]["n"].as_i64(), events[1]["content"]["n"].as_i64()), (Some(1), Some(2)));

        // The laptop got only the message for every device; its inbox keeps it across initial syncs.
        for _ in 0..2 {
            let laptop = s.sync_until(&alice_laptop, "", |b| !to_device_events(b).is_empty()).await;
            let contents: Vec<Value> = to_device_events(&laptop).iter().map(|e| e["content"].clone()).collect();
            assert_eq!(contents, [json!({"n": 1})], "[{}]", s.name);
        }

        // Syncing from the token that carried them acknowledges them.
        let after = s.sync(&alice_phone, &format!("since={}", next_batch(&phone))).await;
        assert!(to_device_events(&after).is_empty(), "[{}] {after}", s.name);
        // And a long poll wakes for a new one.
        let poll = s.long_poll(&alice_phone, &next_batch(&after), 10_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.client(
            reqwest::Method::PUT,
            "/sendToDevice/m.test/t3",
            &bob,
            json!({"messages": {ALICE: {"PHONE": {"n": 3}}}}),
        )
        .await;
        let woken = poll.await.unwrap();
        assert_eq!(to_device_events(&woken)[0]["content"]["n"], 3, "[{}] {woken}", s.name);

        for (body, code) in [
            (json!({"messages": {"not-a-user": {"D": {}}}}), "M_INVALID_PARAM"),
            (json!({"messages": {ALICE: ["D"]}}), "M_BAD_JSON"),
            (json!({"messages": {ALICE: {"D": "text"}}}), "M_BAD_JSON"),
            (json!({}), "M_BAD_JSON"),
        ] {
            let url = format!("{}/_matrix/client/v3/sendToDevice/m.test/bad", s.client_base);
            let response = s.http.put(url).bearer_auth(&bob).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let reply: Value = response.json().await.unwrap();
            assert_eq!((status, reply["errcode"].as_str()), (400, Some(code)), "[{}] {body}", s.name);
        }
    }
}

impl Server {
    /// A client API request under `/_matrix/client/v3` whose status and body are returned as is.
    async fn client_raw(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> (u16, Value) {
        let url = format!("{}/_matrix/client/v3{path}", self.client_base);
        let response = self.http.request(method, url).bearer_auth(token).json(&body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }
}

#[tokio::test]
async fn device_keys_one_time_keys_and_device_list_changes() {
    use reqwest::Method;
    for s in servers().await {
        let _alice_laptop = s.register("alice").await;
        let alice_phone = s.login("alice", "PHONE").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        let joined = s.membership(&room, BOB, BOB, "join").await;
        s.settle(&bob, &joined).await;
        let before = next_batch(&s.sync(&bob, "").await);

        let device_keys = json!({"user_id": ALICE, "device_id": "PHONE",
            "algorithms": ["m.olm.v1.curve25519-aes-sha2"], "keys": {"curve25519:PHONE": "c", "ed25519:PHONE": "e"},
            "signatures": {ALICE: {"ed25519:PHONE": "sig"}}});
        let otk = |n: u32| json!({"key": format!("k{n}"), "signatures": {ALICE: {"ed25519:PHONE": "s"}}});
        let upload = json!({"device_keys": device_keys,
            "one_time_keys": {"signed_curve25519:A1": otk(1), "signed_curve25519:A2": otk(2), "signed_curve25519:A3": otk(3)},
            "fallback_keys": {"signed_curve25519:F1": otk(9)}});
        let reply = s.client(Method::POST, "/keys/upload", &alice_phone, upload.clone()).await;
        assert_eq!(reply["one_time_key_counts"], json!({"signed_curve25519": 3}), "[{}]", s.name);
        // The same upload again changes nothing.
        let reply = s.client(Method::POST, "/keys/upload", &alice_phone, upload).await;
        assert_eq!(reply["one_time_key_counts"], json!({"signed_curve25519": 3}), "[{}]", s.name);

        // Bob shares a room with Alice: her device list changed for him.
        let body =
            s.sync_until(&bob, &format!("since={before}"), |b| b["device_lists"]["changed"] == json!([ALICE])).await;
        let after = next_batch(&body);
        let (status, changes) =
            s.get(&format!("/_matrix/client/v3/keys/changes?from={before}&to={after}"), Some(&bob)).await;
        assert_eq!((status, changes["changed"].clone()), (200, json!([ALICE])), "[{}]", s.name);
        let phone = s.sync_until(&alice_phone, "", |b| b["device_one_time_keys_count"]["signed_curve25519"] == 3).await;
        assert_eq!(phone["device_unused_fallback_key_types"], json!(["signed_curve25519"]), "[{}]", s.name);

        let query = json!({"device_keys": {ALICE: [], "@carol:elsewhere.example": []}});
        let keys = s.client(Method::POST, "/keys/query", &bob, query).await;
        let phone_keys = &keys["device_keys"][ALICE]["PHONE"];
        assert_eq!(phone_keys["keys"]["curve25519:PHONE"], "c", "[{}] {keys}", s.name);
        assert_eq!(keys["device_keys"][ALICE].as_object().unwrap().len(), 1, "only the device with keys");
        assert!(keys["failures"].get("elsewhere.example").is_some(), "[{}] {keys}", s.name);

        // Three one-time keys, then the fallback key, which stays claimable.
        let mut claimed = Vec::new();
        for _ in 0..5 {
            let claim = json!({"one_time_keys": {ALICE: {"PHONE": "signed_curve25519"}}});
            let reply = s.client(Method::POST, "/keys/claim", &bob, claim).await;
            let keys = reply["one_time_keys"][ALICE]["PHONE"].as_object().unwrap().clone();
            claimed.push(keys.keys().next().unwrap().clone());
        }
        assert_eq!(
            claimed,
            [
                "signed_curve25519:A1",
                "signed_curve25519:A2",
                "signed_curve25519:A3",
                "signed_curve25519:F1",
                "signed_curve25519:F1"
            ],
            "[{}]",
            s.name
        );
        let phone = s.sync_until(&alice_phone, "", |b| b["device_unused_fallback_key_types"] == json!([])).await;
        assert_eq!(phone["device_one_time_keys_count"], json!({}), "[{}]", s.name);
        let nothing = s
            .client(Method::POST, "/keys/claim", &bob, json!({"one_time_keys": {BOB: {"NONE": "signed_curve25519"}}}))
            .await;
        assert_eq!(nothing["one_time_keys"], json!({}));

        let wrong_device = json!({"device_keys": {"user_id": ALICE, "device_id": "LAPTOP", "algorithms": [], "keys": {}, "signatures": {}}});
        let conflicting = json!({"one_time_keys": {"signed_curve25519:A9": otk(1)}});
        s.client(Method::POST, "/keys/upload", &alice_phone, conflicting.clone()).await;
        let conflicting_again = json!({"one_time_keys": {"signed_curve25519:A9": otk(2)}});
        for (path, token, body, code) in [
            ("/keys/upload", &alice_phone, wrong_device, "M_INVALID_PARAM"),
            ("/keys/upload", &alice_phone, json!({"one_time_keys": {"nocolon": otk(1)}}), "M_INVALID_PARAM"),
            ("/keys/upload", &alice_phone, conflicting_again, "M_INVALID_PARAM"),
            (
                "/keys/upload",
                &alice_phone,
                json!({"device_keys": {"user_id": ALICE, "device_id": "PHONE"}}),
                "M_BAD_JSON",
            ),
            ("/keys/query", &bob, json!({"device_keys": {"not-a-user": []}}), "M_INVALID_PARAM"),
            ("/keys/query", &bob, json!({}), "M_BAD_JSON"),
            ("/keys/claim", &bob, json!({"one_time_keys": {"not-a-user": {}}}), "M_INVALID_PARAM"),
        ] {
            let (status, reply) = s.client_raw(Method::POST, path, token, body.clone()).await;
            assert_eq!((status, reply["errcode"].as_str()), (400, Some(code)), "[{}] {path} {body}: {reply}", s.name);
        }
        for query in ["from=s1", "to=s1", "from=bad&to=s1"] {
            let (status, reply) = s.get(&format!("/_matrix/client/v3/keys/changes?{query}"), Some(&bob)).await;
            assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{}] {query}", s.name);
        }
    }
}

#[tokio::test]
async fn search_finds_visible_messages_with_every_word() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let created = s.client(reqwest::Method::POST, "/createRoom", &alice, json!({"name": "Alice only"})).await;
        let private = created["room_id"].as_str().unwrap().to_owned();
        s.send_text(&alice, &private, "p1", "the quick brown fox, privately").await;
        for (i, text) in
            ["The Quick brown fox", "a quick brown dog", "nothing here", "QUICK BROWN FOXES"].iter().enumerate()
        {
            s.send_text(&alice, &room, &format!("s{i}"), text).await;
        }
        let last = s.send_text(&bob, &room, "b1", "100% quick_brown").await;
        s.settle(&bob, &last).await;

        let (criteria, texts) = (search_criteria, search_texts);

        // Every word as a prefix, any case, newest first; Bob never sees Alice's private room.
        let (status, reply) = s.search(&bob, criteria("fox QUICK", json!({})), "").await;
        assert_eq!(status, 200, "[{}] {reply}", s.name);
        assert_eq!(texts(&reply), ["QUICK BROWN FOXES", "The Quick brown fox"], "[{}]", s.name);
        assert_eq!(reply["search_categories"]["room_events"]["results"][0]["result"]["room_id"], room);
        let (_, reply) = s.search(&alice, criteria("fox privately", json!({})), "").await;
        assert_eq!(texts(&reply), ["the quick brown fox, privately"], "[{}]", s.name);
        // Punctuation separates words and matches nothing by itself.
        let (_, reply) = s.search(&bob, criteria("100%", json!({})), "").await;
        assert_eq!(texts(&reply), ["100% quick_brown"], "[{}]", s.name);
        let (_, reply) = s.search(&bob, criteria("brown_quick", json!({})), "").await;
        assert_eq!(reply["search_categories"]["room_events"]["count"], 4, "[{}] {reply}", s.name);

        // Pages of two, then the rest.
        let (_, first) = s.search(&bob, criteria("quick", json!({"filter": {"limit": 2}})), "").await;
        assert_eq!(texts(&first), ["100% quick_brown", "QUICK BROWN FOXES"], "[{}]", s.name);
        let next = first["search_categories"]["room_events"]["next_batch"].as_str().unwrap().to_owned();
        let (_, second) =
            s.search(&bob, criteria("quick", json!({"filter": {"limit": 2}})), &format!("?next_batch={next}")).await;
        assert_eq!(texts(&second), ["a quick brown dog", "The Quick brown fox"], "[{}]", s.name);
        let (_, senders) = s.search(&bob, criteria("quick", json!({"filter": {"senders": [BOB]}})), "").await;
        assert_eq!(texts(&senders), ["100% quick_brown"], "[{}]", s.name);

        for (body, query) in [
            (criteria("quick", json!({"keys": ["content.nope"]})), ""),
            (criteria("   ", json!({})), ""),
            (criteria("quick", json!({"order_by": "alphabetical"})), ""),
            (criteria("quick", json!({})), "?next_batch=abc"),
            (criteria("quick", json!({})), "?next_batch=rank_0"),
            (criteria("quick", json!({"order_by": "rank"})), "?next_batch=12"),
            (criteria("!!! ***", json!({})), ""),
            (criteria(&["w"; 33].join(" "), json!({})), ""),
            (criteria("quick", json!({"groupings": {"group_by": [{"key": "event_type"}]}})), ""),
        ] {
            let (status, reply) = s.search(&bob, body.clone(), query).await;
            assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{}] {body}", s.name);
        }
        let (status, reply) = s.search(&bob, json!({"search_categories": "x"}), "").await;
        assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_BAD_JSON")), "[{}]", s.name);
    }
}

/// A `/search` body for `term` ordered by `recent` (unless `extra` says
/// otherwise), with `extra` merged into its `room_events`.
fn search_criteria(term: &str, extra: Value) -> Value {
    let mut room_events = json!({"search_term": term, "order_by": "recent"});
    room_events.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    json!({"search_categories": {"room_events": room_events}})
}

/// The bodies of a `/search` reply's results, in order.
fn search_texts(reply: &Value) -> Vec<String> {
    reply["search_categories"]["room_events"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["result"]["content"]["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn search_ranks_counts_groups_and_gives_context() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let created = s.client(Method::POST, "/createRoom", &alice, json!({})).await;
        let private = created["room_id"].as_str().unwrap().to_owned();
        s.send_text(&alice, &private, "p1", "mango in private").await;
        s.send_text(&alice, &room, "c1", "before the fruit").await;
        let strong = s.send_text(&alice, &room, "c2", "mango mango mango").await;
        let weak = s.send_text(&bob, &room, "c3", "one mango in a long sentence about many other things").await;
        s.send_text(&alice, &room, "c4", "after the fruit").await;
        let nul = s.send_text(&alice, &room, "c5", "nul\u{0}byte").await;
        s.settle(&bob, &nul).await;
        let events = |reply: &Value| reply["search_categories"]["room_events"].clone();

        // Rank order (the default) puts the closer match first, recent the newer;
        // the count leaves out what Bob may not see.
        let ranked = search_criteria("MANG", json!({"order_by": "rank"}));
        let (status, reply) = s.search(&bob, ranked.clone(), "").await;
        assert_eq!(status, 200, "[{}] {reply}", s.name);
        let both = ["mango mango mango", "one mango in a long sentence about many other things"];
        assert_eq!(search_texts(&reply), both, "[{}]", s.name);
        assert_eq!(events(&reply)["count"], 2, "[{}] {reply}", s.name);
        let ranks: Vec<f64> =
            events(&reply)["results"].as_array().unwrap().iter().map(|r| r["rank"].as_f64().unwrap()).collect();
        assert!(ranks[0] > ranks[1], "[{}] {ranks:?}", s.name);
        let (_, reply) = s.search(&bob, search_criteria("mango", json!({})), "").await;
        assert_eq!(search_texts(&reply)[0], "one mango in a long sentence about many other things", "[{}]", s.name);
        // The count keeps what the filter keeps: senders, types, content.
        for (filter, count) in [
            (json!({"senders": [BOB]}), 1),
            (json!({"not_senders": [BOB]}), 1),
            (json!({"types": ["m.room.topic"]}), 0),
            (json!({"types": ["m.room.*"], "rooms": [&room]}), 2),
            (json!({"contains_url": true}), 0),
        ] {
            let (_, reply) = s.search(&bob, search_criteria("mango", json!({"filter": filter})), "").await;
            assert_eq!(events(&reply)["count"], count, "[{}] {filter}: {reply}", s.name);
            assert_eq!(events(&reply)["results"].as_array().unwrap().len(), count, "[{}] {filter}: {reply}", s.name);
        }

        // Pages by rank continue where the last one stopped.
        let mut one = ranked.clone();
        one["search_categories"]["room_events"]["filter"] = json!({"limit": 1});
        let (_, first) = s.search(&bob, one.clone(), "").await;
        let next = events(&first)["next_batch"].as_str().unwrap().to_owned();
        let (_, second) = s.search(&bob, one, &format!("?next_batch={next}")).await;
        assert_eq!([search_texts(&first), search_texts(&second)].concat(), both, "[{}]", s.name);

        // Context around each result, with the senders' profiles then; groups; the rooms' state.
        let extra = json!({
            "event_context": {"before_limit": 1, "after_limit": 1, "include_profile": true},
            "groupings": {"group_by": [{"key": "room_id"}, {"key": "sender"}]},
            "include_state": true,
        });
        let (status, reply) = s.search(&bob, search_criteria("mango", extra), "").await;
        assert_eq!(status, 200, "[{}] {reply}", s.name);
        let found = events(&reply);
        let context = &found["results"][0]["context"];
        assert_eq!(context["events_before"][0]["event_id"], strong, "[{}] {context}", s.name);
        assert_eq!(context["events_after"][0]["content"]["body"], "after the fruit", "[{}]", s.name);
        assert!(context["start"].is_string() && context["end"].is_string(), "[{}] {context}", s.name);
        for user in [ALICE, BOB] {
            assert!(context["profile_info"][user].is_object(), "[{}] {user}: {context}", s.name);
        }
        assert_eq!(found["groups"]["room_id"][&room]["results"], json!([&weak, &strong]), "[{}] {found}", s.name);
        assert_eq!(found["groups"]["room_id"][&room]["order"], 0, "[{}]", s.name);
        assert_eq!(found["groups"]["sender"][BOB]["results"], json!([&weak]), "[{}]", s.name);
        assert_eq!(found["groups"]["sender"][ALICE]["order"], 1, "[{}]", s.name);
        let state = found["state"][&room].as_array().unwrap();
        assert!(state.iter().any(|e| e["type"] == "m.room.create"), "[{}] {found}", s.name);

        // A NUL inside a message separates words (PostgreSQL text cannot hold it).
        let (_, reply) = s.search(&bob, search_criteria("byte", json!({})), "").await;
        assert_eq!(events(&reply)["results"][0]["result"]["event_id"], nul, "[{}] {reply}", s.name);

        // A redacted message is no longer found.
        let redaction = s.redact(&alice, &room, &strong, "r1").await;
        s.settle(&bob, &redaction).await;
        let (_, reply) = s.search(&bob, search_criteria("mango", json!({})), "").await;
        assert_eq!(search_texts(&reply), ["one mango in a long sentence about many other things"], "[{}]", s.name);
        assert_eq!(events(&reply)["count"], 1, "[{}] {reply}", s.name);

        // Messages from users Bob ignores are left out.
        let ignore = json!({"ignored_users": {ALICE: {}}});
        s.client(Method::PUT, &format!("/user/{}/account_data/m.ignored_user_list", enc(BOB)), &bob, ignore).await;
        let deadline = Instant::now() + WAIT;
        loop {
            let (_, reply) = s.search(&bob, search_criteria("fruit", json!({})), "").await;
            if search_texts(&reply).is_empty() {
                assert_eq!(events(&reply)["count"], 0, "[{}] {reply}", s.name);
                break;
            }
            assert!(Instant::now() < deadline, "[{}] ignored sender still found: {reply}", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn relations_and_threads_of_an_event() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let body = json!({"preset": "public_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]});
        let room = s.client(Method::POST, "/createRoom", &alice, body).await["room_id"].as_str().unwrap().to_owned();
        s.client(Method::POST, &format!("/rooms/{room}/join"), &bob, json!({})).await;
        let root = s.send_text(&alice, &room, "r", "root").await;
        let thread = |n: u32| {
            json!({"msgtype": "m.text", "body": format!("in thread {n}"),
            "m.relates_to": {"rel_type": "m.thread", "event_id": root}})
        };
        let first = s.send_json(&alice, &room, "m.room.message", "t1", thread(1)).await;
        let edit = s.send_json(&alice, &room, "m.room.message", "e1", json!({"msgtype": "m.text", "body": "* root",
            "m.new_content": {"msgtype": "m.text", "body": "root"}, "m.relates_to": {"rel_type": "m.replace", "event_id": root}}))
        .await;
        let reaction = s
            .send_json(
                &alice,
                &room,
                "m.reaction",
                "k1",
                json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": root, "key": "👍"}}),
            )
            .await;
        let second = s.send_json(&alice, &room, "m.room.message", "t2", thread(2)).await;
        s.settle(&bob, &second).await;

        let v1 = |path: String| format!("/_matrix/client/v1/rooms/{room}/{path}");
        let ids = |body: &Value| ids(body["chunk"].as_array().unwrap());
        let (status, all) = s.get(&v1(format!("relations/{}", enc(&root))), Some(&bob)).await;
        assert_eq!(status, 200, "[{}] {all}", s.name);
        assert_eq!(ids(&all), [second.clone(), reaction.clone(), edit.clone(), first.clone()], "[{}]", s.name);
        let (_, threaded) = s.get(&v1(format!("relations/{}/m.thread?dir=f", enc(&root))), Some(&bob)).await;
        assert_eq!(ids(&threaded), [first.clone(), second.clone()], "[{}]", s.name);
        let (_, reactions) = s.get(&v1(format!("relations/{}/m.annotation/m.reaction", enc(&root))), Some(&bob)).await;
        assert_eq!(ids(&reactions), [reaction.as_str()], "[{}]", s.name);

        // Page by page.
        let (_, page) = s.get(&v1(format!("relations/{}?limit=3", enc(&root))), Some(&bob)).await;
        assert_eq!(ids(&page), [second.clone(), reaction.clone(), edit.clone()]);
        let next = page["next_batch"].as_str().unwrap();
        let (_, rest) = s.get(&v1(format!("relations/{}?limit=3&from={next}", enc(&root))), Some(&bob)).await;
        assert_eq!(ids(&rest), [first.as_str()]);
        assert!(rest.get("next_batch").is_none(), "{rest}");

        let (_, threads) = s.get(&v1("threads".to_owned()), Some(&bob)).await;
        assert_eq!(ids(&threads), [root.as_str()], "[{}]", s.name);
        let (_, mine) = s.get(&v1("threads?include=participated".to_owned()), Some(&bob)).await;
        assert!(ids(&mine).is_empty(), "[{}] {mine}", s.name);
        let (_, mine) = s.get(&v1("threads?include=participated".to_owned()), Some(&alice)).await;
        assert_eq!(ids(&mine), [root.as_str()], "[{}]", s.name);

        for (path, status, code) in [
            (format!("relations/{}?dir=x", enc(&root)), 400, "M_INVALID_PARAM"),
            (format!("relations/{}?limit=-1", enc(&root)), 400, "M_INVALID_PARAM"),
            ("threads?include=some".to_owned(), 400, "M_INVALID_PARAM"),
            ("relations/%24unknown".to_owned(), 404, "M_NOT_FOUND"),
        ] {
            let (got, body) = s.get(&v1(path.clone()), Some(&bob)).await;
            assert_eq!((got, body["errcode"].as_str()), (status, Some(code)), "[{}] {path}: {body}", s.name);
        }
        // Carol was never in this room.
        let (got, body) = s.get(&v1(format!("relations/{}", enc(&root))), Some(&carol)).await;
        assert_eq!((got, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "[{}]", s.name);
    }
}

impl Server {
    /// An event of any type sent through the client API; its id.
    async fn send_json(&self, token: &str, room: &str, event_type: &str, txn: &str, content: Value) -> String {
        let path = format!("/rooms/{room}/send/{event_type}/{txn}");
        self.client(reqwest::Method::PUT, &path, token, content).await["event_id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn cross_signing_keys_and_signatures() {
    use reqwest::Method;
    for s in servers().await {
        let alice = s.login_after_register("alice", "PHONE").await;
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        let joined = s.membership(&room, BOB, BOB, "join").await;
        s.settle(&bob, &joined).await;
        let before = next_batch(&s.sync(&bob, "").await);

        let key = |usage: &str, public: &str| json!({"user_id": ALICE, "usage": [usage], "keys": {format!("ed25519:{public}"): public}});
        let device_keys = json!({"user_id": ALICE, "device_id": "PHONE", "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {"ed25519:PHONE": "dev"}, "signatures": {ALICE: {"ed25519:PHONE": "self"}}});
        s.client(Method::POST, "/keys/upload", &alice, json!({"device_keys": device_keys})).await;
        let upload = json!({"master_key": key("master", "MASTER"), "self_signing_key": key("self_signing", "SELF"),
            "user_signing_key": key("user_signing", "USER")});
        // The first upload needs no password, nor does the same upload again.
        s.client(Method::POST, "/keys/device_signing/upload", &alice, upload.clone()).await;
        s.client(Method::POST, "/keys/device_signing/upload", &alice, upload).await;
        s.sync_until(&bob, &format!("since={before}"), |b| b["device_lists"]["changed"] == json!([ALICE])).await;

        // Replacing the master key asks for the password.
        let replace = json!({"master_key": key("master", "MASTER2")});
        let (status, challenge) =
            s.client_raw(Method::POST, "/keys/device_signing/upload", &alice, replace.clone()).await;
        assert_eq!(status, 401, "[{}] {challenge}", s.name);
        let session = challenge["session"].as_str().unwrap();
        let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "alice"},
            "password": PASSWORD, "session": session});
        let mut with_auth = replace;
        with_auth["auth"] = auth;
        s.client(Method::POST, "/keys/device_signing/upload", &alice, with_auth).await;

        // Alice signs her device with her self-signing key; Bob signs her master key.
        let mut signed_device = device_keys_of(&s, &alice).await;
        signed_device["signatures"][ALICE]["ed25519:SELF"] = json!("by-self-signing");
        let reply =
            s.client(Method::POST, "/keys/signatures/upload", &alice, json!({ALICE: {"PHONE": signed_device}})).await;
        assert_eq!(reply["failures"], json!({}), "[{}]", s.name);
        let master = json!({"user_id": ALICE, "usage": ["master"], "keys": {"ed25519:MASTER2": "MASTER2"},
            "signatures": {BOB: {"ed25519:BOBUSER": "by-bob"}}});
        let unsigned = json!({"user_id": ALICE, "usage": ["master"], "keys": {"ed25519:MASTER2": "MASTER2"}});
        let reply = s
            .client(
                Method::POST,
                "/keys/signatures/upload",
                &bob,
                json!({ALICE: {"MASTER2": master, "OTHER": unsigned}}),
            )
            .await;
        assert_eq!(reply["failures"][ALICE]["OTHER"]["errcode"], "M_INVALID_SIGNATURE", "[{}] {reply}", s.name);

        let by_bob = s.client(Method::POST, "/keys/query", &bob, json!({"device_keys": {ALICE: []}})).await;
        assert_eq!(by_bob["master_keys"][ALICE]["keys"], json!({"ed25519:MASTER2": "MASTER2"}), "[{}]", s.name);
        assert_eq!(by_bob["master_keys"][ALICE]["signatures"][BOB]["ed25519:BOBUSER"], "by-bob");
        assert_eq!(by_bob["self_signing_keys"][ALICE]["keys"], json!({"ed25519:SELF": "SELF"}));
        assert!(by_bob["user_signing_keys"].get(ALICE).is_none(), "only Alice sees her user-signing key");
        assert_eq!(by_bob["device_keys"][ALICE]["PHONE"]["signatures"][ALICE]["ed25519:SELF"], "by-self-signing");
        let by_alice = s.client(Method::POST, "/keys/query", &alice, json!({"device_keys": {ALICE: []}})).await;
        assert_eq!(by_alice["user_signing_keys"][ALICE]["keys"], json!({"ed25519:USER": "USER"}), "[{}]", s.name);

        for body in [
            json!({"master_key": {"user_id": BOB, "usage": ["master"], "keys": {"ed25519:X": "X"}}}),
            json!({"self_signing_key": key("master", "X")}),
            json!({"master_key": {"user_id": ALICE, "usage": ["master"], "keys": {"ed25519:X": "X", "ed25519:Y": "Y"}}}),
            json!({"master_key": {"user_id": ALICE, "usage": ["master"], "keys": {"curve25519:X": "X"}}}),
        ] {
            let (status, reply) = s.client_raw(Method::POST, "/keys/device_signing/upload", &alice, body.clone()).await;
            assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{}] {body}", s.name);
        }
        let (status, reply) = s.client_raw(Method::POST, "/keys/signatures/upload", &bob, json!({ALICE: "x"})).await;
        assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_BAD_JSON")), "[{}]", s.name);
    }
}

/// The device keys `token`'s device published, as `/keys/query` returns them.
async fn device_keys_of(s: &Server, token: &str) -> Value {
    let keys = s.client(reqwest::Method::POST, "/keys/query", token, json!({"device_keys": {ALICE: ["PHONE"]}})).await;
    let mut device = keys["device_keys"][ALICE]["PHONE"].clone();
    device.as_object_mut().unwrap().remove("unsigned");
    device
}

impl Server {
    /// Register `localpart`, then log in on `device_id`; that device's token.
    async fn login_after_register(&self, localpart: &str, device_id: &str) -> String {
        self.register(localpart).await;
        self.login(localpart, device_id).await
    }
}

/// The `m.presence` events of a sync response, by user.
fn presence_of(body: &Value, user_id: &str) -> Option<Value> {
    body["presence"]["events"].as_array()?.iter().rev().find(|e| e["sender"] == user_id).map(|e| e["content"].clone())
}

#[tokio::test]
async fn presence_reaches_those_who_share_a_room() {
    use reqwest::Method;
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let room = s.create_room(ALICE).await;
        let joined = s.membership(&room, BOB, BOB, "join").await;
        s.settle(&bob, &joined).await;
        let since = next_batch(&s.sync(&bob, "set_presence=offline").await);

        let status = |user: &str| format!("/_matrix/client/v3/presence/{user}/status");
        let (code, _) = s
            .request(Method::PUT, &status(ALICE), Some(&alice), Some(r#"{"presence":"online","status_msg":"busy"}"#))
            .await;
        assert_eq!(code, 200, "[{}]", s.name);
        let body = s
            .sync_until(&bob, &format!("since={since}&set_presence=offline"), |b| presence_of(b, ALICE).is_some())
            .await;
        let seen = presence_of(&body, ALICE).unwrap();
        assert_eq!(
            (seen["presence"].as_str(), seen["status_msg"].as_str()),
            (Some("online"), Some("busy")),
            "[{}]",
            s.name
        );
        let (code, got) = s.get(&status(ALICE), Some(&bob)).await;
        assert_eq!(
            (code, got["presence"].as_str(), got["currently_active"].as_bool()),
            (200, Some("online"), Some(true))
        );

        // A long poll wakes when a room mate's presence changes, and a sync's set_presence counts too.
        let poll = s.long_poll(&alice, &next_batch(&s.sync(&alice, "set_presence=offline").await), 10_000);
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.sync(&bob, "set_presence=unavailable").await;
        let woken = poll.await.unwrap();
        assert_eq!(presence_of(&woken, BOB).unwrap()["presence"], "unavailable", "[{}] {woken}", s.name);

        // Carol shares no room with Alice.
        let (code, body) = s.get(&status(ALICE), Some(&carol)).await;
        assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{}]", s.name);
        let (code, body) = s.request(Method::PUT, &status(BOB), Some(&alice), Some(r#"{"presence":"online"}"#)).await;
        assert_eq!((code, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{}]", s.name);
        let (code, body) = s.request(Method::PUT, &status(ALICE), Some(&alice), Some(r#"{"presence":"asleep"}"#)).await;
        assert_eq!((code, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{}]", s.name);
        let (code, body) = s.get("/_matrix/client/v3/sync?set_presence=asleep", Some(&alice)).await;
        assert_eq!((code, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "[{}]", s.name);
        let (code, body) = s.get(&status("@carol:localhost"), Some(&carol)).await;
        assert_eq!((code, body["presence"].as_str()), (200, Some("offline")), "[{}] never set", s.name);
    }
}

/// Guests read through `/sync`, `/messages`, `/event` and `/context` (a
/// world-readable room without joining it), and nothing else of this API.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#guest-access>
#[tokio::test]
async fn guests_read_what_the_spec_opens_to_them_and_nothing_else() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let url = format!("{}/_matrix/client/v3/register?kind=guest", s.client_base);
        let reply: Value = s.http.post(url).json(&json!({})).send().await.unwrap().json().await.unwrap();
        let guest = reply["access_token"].as_str().unwrap().to_owned();

        let created = s.client(reqwest::Method::POST, "/createRoom", &alice, json!({"preset": "public_chat"})).await;
        let room = created["room_id"].as_str().unwrap().to_owned();

        // Not world-readable yet: the guest, never a member, reads nothing.
        for read in ["messages?dir=b", "members"] {
            let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/{read}"), Some(&guest)).await;
            assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "[{}] {read}: {body}", s.name);
        }
        let visibility = json!({"history_visibility": "world_readable"});
        s.client(reqwest::Method::PUT, &format!("/rooms/{room}/state/m.room.history_visibility"), &alice, visibility)
            .await;
        // Readable from the change on, without joining.
        let sent = s
            .client(
                reqwest::Method::PUT,
                &format!("/rooms/{room}/send/m.room.message/t1"),
                &alice,
                json!({"body": "hi"}),
            )
            .await;
        let event_id = sent["event_id"].as_str().unwrap().to_owned();
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b"), Some(&guest)).await;
            let chunk = body["chunk"].as_array().cloned().unwrap_or_default();
            if status == 200 && chunk.iter().any(|e| e["event_id"] == event_id.as_str()) {
                break;
            }
            assert!(Instant::now() < deadline, "[{}] the guest never read the room: {status} {body}", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{event_id}"), Some(&guest)).await;
        assert_eq!(status, 200, "[{}] {body}", s.name);
        let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/context/{event_id}"), Some(&guest)).await;
        assert_eq!(status, 200, "[{}] {body}", s.name);
        let (status, body) = s.get(&format!("/_matrix/client/v3/rooms/{room}/members"), Some(&guest)).await;
        assert_eq!((status, memberships(&body)), (200, pairs(&[(ALICE, "join")])), "[{}] {body}", s.name);
        s.sync(&guest, "").await;

        // Closed to guests.
        for path in [
            "/_matrix/client/v3/keys/changes?from=s0&to=s1".to_owned(),
            format!("/_matrix/client/v1/rooms/{room}/threads"),
            "/_matrix/client/v3/presence/%40alice%3Alocalhost/status".to_owned(),
        ] {
            let (status, body) = s.get(&path, Some(&guest)).await;
            assert_eq!(
                (status, body["errcode"].as_str()),
                (403, Some("M_GUEST_ACCESS_FORBIDDEN")),
                "[{}] {path}: {body}",
                s.name
            );
        }
        let (status, body) =
            s.request(reqwest::Method::POST, "/_matrix/client/v3/search", Some(&guest), Some("{}")).await;
        assert_eq!((status, body["errcode"].as_str()), (403, Some("M_GUEST_ACCESS_FORBIDDEN")), "[{}] {body}", s.name);
    }
}

/// Joining another server's room brings the whole room state with the join
/// (one output record): that state is the state before the timeline, both
/// in an initial sync and in the incremental sync that first shows the room.
#[tokio::test]
async fn a_join_that_brings_the_room_state_shows_it_before_the_timeline() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let since = s.sync(&alice, "").await["next_batch"].as_str().unwrap().to_owned();
        let room = format!("!{}:remote.example", alphanumeric(18));
        let carol = "@carol:remote.example";
        let state = [
            stored_event(&room, carol, "m.room.create", Some(""), json!({"room_version": "11", "creator": carol})),
            stored_event(&room, carol, "m.room.member", Some(carol), json!({"membership": "join"})),
            stored_event(&room, carol, "m.room.power_levels", Some(""), json!({"users": {carol: 100}})),
            stored_event(&room, carol, "m.room.join_rules", Some(""), json!({"join_rule": "public"})),
            stored_event(&room, carol, "m.room.encryption", Some(""), json!({"algorithm": "m.megolm.v1.aes-sha2"})),
            stored_event(&room, carol, "m.room.name", Some(""), json!({"name": "Elsewhere"})),
        ];
        let join = stored_event(&room, ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}));
        let join_id = join.event_id.to_string();
        let added = state.iter().cloned().chain([join.clone()]).collect();
        let record = OutputRecord::NewRoomEvent(NewRoomEvent {
            event: join,
            room_version: "11".to_owned(),
            state_delta: StateDelta { added, removed: vec![] },
            txn: None,
            historical: false,
        });
        s.bus.produce_json(OUTPUT_TOPIC, &room, &record).await.unwrap();
        s.settle(&alice, &join_id).await;

        for (kind, body) in
            [("initial", s.sync(&alice, "").await), ("incremental", s.sync(&alice, &format!("since={since}")).await)]
        {
            let joined = &body["rooms"]["join"][&room];
            assert_eq!(types(timeline(&body, "join", &room)), ["m.room.member"], "[{}] {kind}: {joined}", s.name);
            let shown: Vec<&str> =
                joined["state"]["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
            for expected in
                ["m.room.create", "m.room.member", "m.room.power_levels", "m.room.encryption", "m.room.name"]
            {
                assert!(shown.contains(&expected), "[{}] {kind}: {expected} missing from {shown:?}", s.name);
            }
            assert_eq!(shown.len(), state.len(), "[{}] {kind}: only the state before the join: {shown:?}", s.name);
        }
    }
}

// ---- Simplified sliding sync (MSC4186) ----

const SLIDING: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A sliding sync request (`query`: `?pos=…` and such) whose status and body are returned as is.
async fn sliding_raw(s: &Server, token: Option<&str>, query: &str, body: &str) -> (u16, Value) {
    s.request(reqwest::Method::POST, &format!("{SLIDING}{query}"), token, Some(body)).await
}

/// A sliding sync request that must succeed; its body.
async fn sliding(s: &Server, token: &str, query: &str, body: &Value) -> Value {
    let (status, reply) = sliding_raw(s, Some(token), query, &body.to_string()).await;
    assert_eq!(status, 200, "[{}] sliding sync {query} {body}: {reply}", s.name);
    reply
}

/// Fresh sliding sync connections until `done` holds for the answer.
async fn sliding_until(s: &Server, token: &str, body: &Value, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = sliding(s, token, "", body).await;
        if done(&reply) {
            return reply;
        }
        assert!(Instant::now() < deadline, "[{}] sliding sync {body} never got there: {reply}", s.name);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pos_of(reply: &Value) -> String {
    reply["pos"].as_str().unwrap().to_owned()
}

/// The ids of the rooms in a sliding sync answer, sorted.
fn room_ids(reply: &Value) -> Vec<String> {
    sorted(reply["rooms"].as_object().unwrap().keys().cloned().collect())
}

/// `(type, state_key)` of each event of a room's `required_state`.
fn state_keys(room: &Value) -> Vec<(String, String)> {
    room["required_state"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["state_key"].as_str().unwrap().to_owned()))
        .collect()
}

fn sorted<T: Ord>(mut items: Vec<T>) -> Vec<T> {
    items.sort();
    items
}

#[tokio::test]
async fn sliding_sync_lists_sort_rooms_by_activity_and_send_only_what_changed() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let mut rooms = Vec::new();
        for body in ["one", "two", "three"] {
            let room = s.create_room(ALICE).await;
            let sent = s.message(&room, ALICE, body).await;
            s.settle(&alice, &sent).await;
            rooms.push(room);
        }
        // The first room becomes the most recently active.
        let latest = s.message(&rooms[0], ALICE, "one again").await;
        s.settle(&alice, &latest).await;
        let list = |ranges: Value| {
            json!({"lists": {"all": {"ranges": ranges, "timeline_limit": 1,
                "required_state": [["m.room.name", ""]]}}})
        };

        let first = sliding(&s, &alice, "", &list(json!([[0, 1]]))).await;
        assert_eq!(first["lists"]["all"]["count"], 3, "[{}] {first}", s.name);
        assert_eq!(room_ids(&first), sorted(vec![rooms[0].clone(), rooms[2].clone()]), "[{}] top two", s.name);
        let top = &first["rooms"][&rooms[0]];
        assert_eq!(bodies(top["timeline"].as_array().unwrap()), ["one again"], "[{}] {top}", s.name);
        assert_eq!((top["initial"].as_bool(), top["limited"].as_bool()), (Some(true), Some(true)));
        assert_eq!((top["name"].as_str(), top["membership"].as_str()), (Some("Test room"), Some("join")));
        assert_eq!(state_keys(top), [("m.room.name".to_owned(), String::new())]);
        assert_eq!((top["joined_count"].as_i64(), top["invited_count"].as_i64()), (Some(1), Some(0)));
        assert_eq!((top["notification_count"].as_i64(), top["num_live"].as_i64()), (Some(0), Some(0)));
        assert!(top["prev_batch"].as_str().unwrap().starts_with('s'), "{top}");
        assert!(top.get("heroes").is_none(), "a named room has no heroes: {top}");
        let third = &first["rooms"][&rooms[2]];
        assert!(top["bump_stamp"].as_i64().unwrap() > third["bump_stamp"].as_i64().unwrap(), "[{}] {first}", s.name);

        // Widening the range sends only the room the connection lacks.
        let pos = pos_of(&first);
        let wider = sliding(&s, &alice, &format!("?pos={pos}"), &list(json!([[0, 2]]))).await;
        assert_eq!(room_ids(&wider), [rooms[1].clone()], "[{}] {wider}", s.name);
        assert_eq!(wider["rooms"][&rooms[1]]["initial"], true);
        assert_eq!(bodies(wider["rooms"][&rooms[1]]["timeline"].as_array().unwrap()), ["two"]);

        // A new event: only its room, only the new event, live.
        let pos = pos_of(&wider);
        let sent = s.message(&rooms[2], ALICE, "three again").await;
        s.settle(&alice, &sent).await;
        let update = sliding(&s, &alice, &format!("?pos={pos}"), &list(json!([[0, 2]]))).await;
        assert_eq!(room_ids(&update), [rooms[2].clone()], "[{}] {update}", s.name);
        let room = &update["rooms"][&rooms[2]];
        assert_eq!(bodies(room["timeline"].as_array().unwrap()), ["three again"], "[{}] {room}", s.name);
        assert!(room.get("initial").is_none() && room.get("name").is_none(), "[{}] only changes: {room}", s.name);
        assert_eq!((room["num_live"].as_i64(), room["limited"].as_bool()), (Some(1), Some(false)));
        assert!(state_keys(room).is_empty(), "[{}] the name did not change: {room}", s.name);
        // A retry of the same `pos` gets the same answer.
        let retry = sliding(&s, &alice, &format!("?pos={pos}"), &list(json!([[0, 2]]))).await;
        assert_eq!(room_ids(&retry), [rooms[2].clone()], "[{}] {retry}", s.name);
        // Nothing new since: nothing sent.
        let quiet = sliding(&s, &alice, &format!("?pos={}", pos_of(&retry)), &list(json!([[0, 2]]))).await;
        assert!(room_ids(&quiet).is_empty(), "[{}] {quiet}", s.name);
        assert_eq!(quiet["lists"]["all"]["count"], 3);

        // The most recent room now leads the list; an explicit empty window shows nothing.
        let fresh = sliding(&s, &alice, "", &list(json!([[0, 0]]))).await;
        assert_eq!(room_ids(&fresh), [rooms[2].clone()], "[{}] {fresh}", s.name);
        let none = sliding(&s, &alice, "", &list(json!([]))).await;
        assert!(room_ids(&none).is_empty() && none["lists"]["all"]["count"] == 3, "[{}] {none}", s.name);
    }
}

#[tokio::test]
async fn sliding_sync_list_filters() {
    use reqwest::Method;
    for s in servers().await {
        let alice = s.register("alice").await;
        let plain = s.create_room(ALICE).await;
        let encrypted = s.create_room(ALICE).await;
        s.emit(&encrypted, ALICE, "m.room.encryption", Some(""), json!({"algorithm": "m.megolm.v1.aes-sha2"})).await;
        let dm = s.create_room(ALICE).await;
        let space = format!("!{}:localhost", alphanumeric(18));
        s.emit(&space, ALICE, "m.room.create", Some(""), json!({"room_version": "12", "type": "m.space"})).await;
        s.membership(&space, ALICE, ALICE, "join").await;
        s.emit(&dm, ALICE, "m.room.name", Some(""), json!({"name": "Direct Chat"})).await;
        s.emit(&space, ALICE, "m.space.child", Some(plain.as_str()), json!({"via": ["localhost"]})).await;
        // An emptied child entry no longer counts.
        let last = s.emit(&space, ALICE, "m.space.child", Some(encrypted.as_str()), json!({})).await;
        s.settle(&alice, &last).await;
        let user = format!("/user/{ALICE}");
        s.client(Method::PUT, &format!("{user}/account_data/m.direct"), &alice, json!({BOB: [dm]})).await;
        s.client(Method::PUT, &format!("{user}/rooms/{plain}/tags/u.work"), &alice, json!({})).await;

        let list =
            |filters: Value| json!({"ranges": [[0, 9]], "timeline_limit": 0, "required_state": [], "filters": filters});
        let body = json!({"lists": {
            "all": list(json!({})),
            "encrypted": list(json!({"is_encrypted": true})),
            "rooms": list(json!({"is_encrypted": false, "not_room_types": ["m.space"]})),
            "spaces": list(json!({"room_types": ["m.space"]})),
            "untyped": list(json!({"room_types": [null]})),
            "dms": list(json!({"is_dm": true})),
            "not_dms": list(json!({"is_dm": false})),
            "work": list(json!({"tags": ["u.work"]})),
            "not_work": list(json!({"not_tags": ["u.work"]})),
            "invites": list(json!({"is_invite": true})),
            "in_space": list(json!({"spaces": [space]})),
            "in_unjoined_space": list(json!({"spaces": ["!elsewhere:localhost"]})),
            "named": list(json!({"room_name_like": "dIRECT"})),
        }});
        let reply =
            sliding_until(&s, &alice, &body, |r| r["lists"]["dms"]["count"] == 1 && r["lists"]["work"]["count"] == 1)
                .await;
        let counts: Vec<(String, i64)> = reply["lists"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, list)| (name.clone(), list["count"].as_i64().unwrap()))
            .collect();
        let expected = [
            ("all", 4),
            ("dms", 1),
            ("encrypted", 1),
            ("in_space", 1),
            ("in_unjoined_space", 0),
            ("invites", 0),
            ("named", 1),
            ("not_dms", 3),
            ("not_work", 3),
            ("rooms", 2),
            ("spaces", 1),
            ("untyped", 3),
            ("work", 1),
        ];
        let expected: Vec<(String, i64)> = expected.iter().map(|(n, c)| (n.to_string(), *c)).collect();
        assert_eq!(counts, expected, "[{}] {reply}", s.name);
        assert_eq!(reply["rooms"][&dm]["is_dm"], true, "[{}]", s.name);
        assert!(reply["rooms"][&plain].get("is_dm").is_none());
        let in_space = sliding(&s, &alice, "", &json!({"lists": {"in_space": list(json!({"spaces": [space]}))}})).await;
        assert_eq!(room_ids(&in_space), [plain.as_str()], "[{}] {in_space}", s.name);
    }
}

#[tokio::test]
async fn sliding_sync_required_state_wildcards_lazy_members_and_heroes() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        s.emit(&room, BOB, "m.room.member", Some(BOB), json!({"membership": "join", "displayname": "Bob"})).await;
        s.membership(&room, "@carol:localhost", "@carol:localhost", "join").await;
        let hi = s.message(&room, BOB, "hi").await;
        s.settle(&alice, &hi).await;
        let member = |user: &str| ("m.room.member".to_owned(), user.to_owned());
        let subscribe = |required_state: Value| json!({"room_subscriptions": {&room: {"timeline_limit": 1, "required_state": required_state}}});

        // Each request without `pos` starts the connection afresh.
        let me = sliding(&s, &alice, "", &subscribe(json!([["m.room.member", "$ME"]]))).await;
        assert_eq!(state_keys(&me["rooms"][&room]), [member(ALICE)], "[{}]", s.name);
        let everyone = sliding(&s, &alice, "", &subscribe(json!([["m.room.member", "*"]]))).await;
        assert_eq!(
            sorted(state_keys(&everyone["rooms"][&room])),
            sorted(vec![member(ALICE), member(BOB), member("@carol:localhost")])
        );
        let by_key = sliding(&s, &alice, "", &subscribe(json!([["*", ""]]))).await;
        assert_eq!(state_keys(&by_key["rooms"][&room]).len(), 4, "[{}] the four state events keyed \"\"", s.name);

        let lazy = sliding(&s, &alice, "", &subscribe(json!([["*", "*"], ["m.room.member", "$LAZY"]]))).await;
        let shown = &lazy["rooms"][&room];
        assert_eq!(bodies(shown["timeline"].as_array().unwrap()), ["hi"], "[{}] {shown}", s.name);
        let keys = sorted(state_keys(shown));
        let expected = sorted(vec![
            ("m.room.create".to_owned(), String::new()),
            ("m.room.join_rules".to_owned(), String::new()),
            ("m.room.name".to_owned(), String::new()),
            ("m.room.power_levels".to_owned(), String::new()),
            member(BOB),
        ]);
        assert_eq!(keys, expected, "[{}] every state but only the members the timeline needs", s.name);

        let (status, reply) = sliding_raw(&s, Some(&alice), &format!("?pos={}", pos_of(&me)), "{}").await;
        assert_eq!((status, reply["errcode"].as_str()), (400, Some("M_UNKNOWN_POS")), "a replaced connection");

        // Subscriptions stay until dropped: a member leaving reaches the
        // connection without naming the room again, with the member event.
        let pos = pos_of(&lazy);
        let left = s.membership(&room, "@carol:localhost", "@carol:localhost", "leave").await;
        s.settle(&alice, &left).await;
        let update = sliding(&s, &alice, &format!("?pos={pos}"), &json!({})).await;
        let shown = &update["rooms"][&room];
        assert_eq!(types(shown["timeline"].as_array().unwrap()), ["m.room.member"], "[{}] {update}", s.name);
        let carol = shown["required_state"].as_array().unwrap().iter().find(|e| e["state_key"] == "@carol:localhost");
        assert_eq!(carol.map(|e| e["content"]["membership"].clone()), Some(json!("leave")), "[{}] {shown}", s.name);
        assert_eq!(shown["joined_count"], 2);

        // Once dropped, its changes are not sent.
        let pos = pos_of(&update);
        let dropped = sliding(&s, &alice, &format!("?pos={pos}"), &json!({"unsubscribe_rooms": [&room]})).await;
        let later = s.message(&room, BOB, "unseen").await;
        s.settle(&alice, &later).await;
        let quiet = sliding(&s, &alice, &format!("?pos={}", pos_of(&dropped)), &json!({})).await;
        assert!(room_ids(&quiet).is_empty(), "[{}] {quiet}", s.name);

        // A room without a name: its heroes name it.
        let unnamed = format!("!{}:localhost", alphanumeric(18));
        s.emit(&unnamed, ALICE, "m.room.create", Some(""), json!({"room_version": "12"})).await;
        s.membership(&unnamed, ALICE, ALICE, "join").await;
        let joined = s
            .emit(&unnamed, BOB, "m.room.member", Some(BOB), json!({"membership": "join", "displayname": "Bob"}))
            .await;
        s.settle(&alice, &joined).await;
        let body = json!({"room_subscriptions": {&unnamed: {"timeline_limit": 0, "required_state": []}}});
        let reply = sliding(&s, &alice, "", &body).await;
        let shown = &reply["rooms"][&unnamed];
        assert_eq!(shown["heroes"], json!([{"user_id": BOB, "displayname": "Bob"}]), "[{}] {shown}", s.name);
        assert!(shown.get("name").is_none(), "{shown}");
    }
}

#[tokio::test]
async fn sliding_sync_invites_show_stripped_state_and_subscriptions_need_membership() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let created =
            s.client(Method::POST, "/createRoom", &alice, json!({"preset": "private_chat", "name": "Secret"})).await;
        let secret = created["room_id"].as_str().unwrap().to_owned();
        let other = s.client(Method::POST, "/createRoom", &alice, json!({"name": "Other"})).await;
        let other = other["room_id"].as_str().unwrap().to_owned();
        s.client(Method::POST, &format!("/rooms/{secret}/invite"), &alice, json!({"user_id": BOB})).await;

        let list = |is_invite: bool| {
            json!({"ranges": [[0, 9]], "timeline_limit": 5, "required_state": [["*", "*"]],
                "filters": {"is_invite": is_invite}})
        };
        let body = json!({
            "lists": {"invites": list(true), "joined": list(false)},
            "room_subscriptions": {&other: {"timeline_limit": 5, "required_state": [["*", "*"]]}},
        });
        let reply = sliding_until(&s, &bob, &body, |r| r["rooms"].get(&secret).is_some()).await;
        assert_eq!(room_ids(&reply), [secret.as_str()], "[{}] not the room bob is not in: {reply}", s.name);
        assert_eq!(
            (reply["lists"]["invites"]["count"].as_i64(), reply["lists"]["joined"]["count"].as_i64()),
            (Some(1), Some(0))
        );
        let invite = &reply["rooms"][&secret];
        assert_eq!((invite["membership"].as_str(), invite["initial"].as_bool()), (Some("invite"), Some(true)));
        let stripped = types(invite["invite_state"].as_array().unwrap());
        for wanted in ["m.room.create", "m.room.name", "m.room.member"] {
            assert!(stripped.contains(&wanted.to_owned()), "[{}] {wanted} not in {stripped:?}", s.name);
        }
        assert!(invite.get("timeline").is_none(), "[{}] an invitee sees no timeline: {invite}", s.name);

        // Joining brings the room whole.
        let mut pos = pos_of(&reply);
        s.client(Method::POST, &format!("/rooms/{secret}/join"), &bob, json!({})).await;
        let deadline = Instant::now() + WAIT;
        let joined = loop {
            let reply = sliding(&s, &bob, &format!("?pos={pos}&timeout=10000"), &json!({"lists": body["lists"]})).await;
            if reply["rooms"][&secret]["membership"] == "join" {
                break reply;
            }
            assert!(Instant::now() < deadline, "[{}] the join never came: {reply}", s.name);
            pos = pos_of(&reply);
        };
        let room = &joined["rooms"][&secret];
        assert_eq!((room["initial"].as_bool(), room["name"].as_str()), (Some(true), Some("Secret")), "{room}");
        let timeline = room["timeline"].as_array().unwrap();
        assert!(timeline.iter().any(|e| e["type"] == "m.room.member" && e["state_key"] == BOB), "{room}");
        assert_eq!(
            (joined["lists"]["invites"]["count"].as_i64(), joined["lists"]["joined"]["count"].as_i64()),
            (Some(0), Some(1))
        );
        assert!(joined["rooms"].get(&other).is_none(), "[{}] {joined}", s.name);
    }
}

#[tokio::test]
async fn sliding_sync_long_polls_and_refuses_bad_requests() {
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let body = json!({"conn_id": "main", "lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}}});
        let first = sliding(&s, &bob, "", &body).await;
        assert_eq!(room_ids(&first), [room.as_str()], "[{}] {first}", s.name);
        let pos = pos_of(&first);

        let poll = {
            let url = format!("{}{SLIDING}?pos={pos}&timeout=30000", s.base);
            let request = s.http.post(url).bearer_auth(&bob).json(&body);
            tokio::spawn(async move { request.send().await.unwrap().json::<Value>().await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished(), "[{}] the long poll returned before any change", s.name);
        s.client(
            reqwest::Method::PUT,
            &format!("/rooms/{room}/send/m.room.message/w1"),
            &alice,
            json!({"body": "wake"}),
        )
        .await;
        let woken = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("long poll woke").unwrap();
        let shown = &woken["rooms"][&room];
        assert_eq!(bodies(shown["timeline"].as_array().unwrap()), ["wake"], "[{}] {woken}", s.name);
        assert_eq!((shown["num_live"].as_i64(), shown.get("initial")), (Some(1), None));

        // Nothing happens: the poll ends empty at its timeout.
        let started = Instant::now();
        let quiet = sliding(&s, &bob, &format!("?pos={}&timeout=500", pos_of(&woken)), &body).await;
        assert!(started.elapsed() >= Duration::from_millis(450), "[{}] returned early: {quiet}", s.name);
        assert!(room_ids(&quiet).is_empty(), "[{}] {quiet}", s.name);

        let url = format!("{}/_matrix/client/v3/register?kind=guest", s.client_base);
        let reply: Value = s.http.post(url).json(&json!({})).send().await.unwrap().json().await.unwrap();
        let guest = reply["access_token"].as_str().unwrap().to_owned();
        let other_conn = json!({"conn_id": "other"}).to_string();
        let valid = body.to_string();
        for (token, query, request, status, code) in [
            (Some(bob.as_str()), "?pos=bogus".to_owned(), valid.clone(), 400, "M_UNKNOWN_POS"),
            (Some(bob.as_str()), format!("?pos={pos}x"), valid.clone(), 400, "M_UNKNOWN_POS"),
            (Some(bob.as_str()), format!("?pos={pos}"), other_conn, 400, "M_UNKNOWN_POS"),
            (Some(alice.as_str()), format!("?pos={pos}"), valid.clone(), 400, "M_UNKNOWN_POS"),
            (Some(bob.as_str()), String::new(), "not json".to_owned(), 400, "M_NOT_JSON"),
            (Some(bob.as_str()), String::new(), r#"{"lists": 5}"#.to_owned(), 400, "M_BAD_JSON"),
            (
                Some(bob.as_str()),
                String::new(),
                r#"{"lists": {"a": {"ranges": [[-1, 2]]}}}"#.to_owned(),
                400,
                "M_BAD_JSON",
            ),
            (
                Some(bob.as_str()),
                String::new(),
                r#"{"lists": {"a": {"ranges": [[3, 1]]}}}"#.to_owned(),
                400,
                "M_INVALID_PARAM",
            ),
            (
                Some(bob.as_str()),
                String::new(),
                r#"{"extensions": {"to_device": {"since": "x"}}}"#.to_owned(),
                400,
                "M_INVALID_PARAM",
            ),
            (Some(bob.as_str()), "?timeout=soon".to_owned(), valid.clone(), 400, "M_INVALID_PARAM"),
            (None, String::new(), valid.clone(), 401, "M_MISSING_TOKEN"),
            (Some("nonsense"), String::new(), valid.clone(), 401, "M_UNKNOWN_TOKEN"),
            (Some(guest.as_str()), String::new(), valid.clone(), 403, "M_GUEST_ACCESS_FORBIDDEN"),
        ] {
            let (got, reply) = sliding_raw(&s, token, &query, &request).await;
            assert_eq!(
                (got, reply["errcode"].as_str()),
                (status, Some(code)),
                "[{}] {query} {request}: {reply}",
                s.name
            );
        }
    }
}

#[tokio::test]
async fn sliding_sync_extensions_deliver_to_device_keys_account_data_receipts_and_typing() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let alice_phone = s.login("alice", "PHONE").await;
        let bob = s.register("bob").await;
        let (room, _) = s.shared_room(&alice, &bob).await;
        let lists = json!({"all": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}});
        let every = json!({"enabled": true});
        let body = json!({"lists": lists, "extensions": {"to_device": every, "e2ee": every, "account_data": every,
            "receipts": every, "typing": every}});
        let first = sliding(&s, &bob, "", &body).await;
        let ext = &first["extensions"];
        assert_eq!(ext["to_device"]["events"], json!([]), "[{}] {ext}", s.name);
        assert_eq!(ext["e2ee"]["device_one_time_keys_count"], json!({}), "[{}] {ext}", s.name);
        assert!(ext["account_data"]["global"].is_array() && ext["typing"]["rooms"].is_object(), "{ext}");

        let sent = s
            .client(Method::PUT, &format!("/rooms/{room}/send/m.room.message/r1"), &alice, json!({"body": "read me"}))
            .await;
        let event_id = sent["event_id"].as_str().unwrap().to_owned();
        s.client(Method::PUT, "/sendToDevice/m.test/t1", &alice, json!({"messages": {BOB: {"*": {"n": 1}}}})).await;
        s.client(Method::PUT, &format!("/user/{BOB}/account_data/org.example.a"), &bob, json!({"v": 1})).await;
        s.client(Method::PUT, &format!("/user/{BOB}/rooms/{room}/tags/u.work"), &bob, json!({})).await;
        s.client(
            Method::PUT,
            &format!("/rooms/{room}/typing/{ALICE}"),
            &alice,
            json!({"typing": true, "timeout": 30_000}),
        )
        .await;
        s.client(Method::POST, &format!("/rooms/{room}/receipt/m.read/{event_id}"), &alice, json!({})).await;
        let otk = json!({"key": "k1", "signatures": {BOB: {"ed25519:X": "s"}}});
        s.client(Method::POST, "/keys/upload", &bob, json!({"one_time_keys": {"signed_curve25519:B1": otk}})).await;
        let device_keys = json!({"user_id": ALICE, "device_id": "PHONE", "algorithms": ["m.olm.v1.curve25519-aes-sha2"],
            "keys": {"curve25519:PHONE": "c", "ed25519:PHONE": "e"}, "signatures": {ALICE: {"ed25519:PHONE": "sig"}}});
        s.client(Method::POST, "/keys/upload", &alice_phone, json!({"device_keys": device_keys})).await;

        // Extensions stay enabled: later requests only pass the to-device token on.
        let (mut pos, mut next_batch) = (pos_of(&first), ext["to_device"]["next_batch"].as_str().unwrap().to_owned());
        let (mut to_device, mut global, mut tags, mut receipt, mut typing, mut otks, mut changed) =
            (Vec::new(), Vec::new(), Vec::new(), None, None, None, Vec::new());
        let deadline = Instant::now() + WAIT;
        while to_device.is_empty()
            || global.is_empty()
            || tags.is_empty()
            || receipt.is_none()
            || typing.is_none()
            || otks.is_none()
            || changed.is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "[{}] extensions incomplete: {to_device:?} {global:?} {tags:?} {receipt:?} {typing:?} {otks:?} {changed:?}",
                s.name
            );
            let request = json!({"lists": lists, "extensions": {"to_device": {"since": next_batch}}});
            let reply = sliding(&s, &bob, &format!("?pos={pos}&timeout=5000"), &request).await;
            let ext = &reply["extensions"];
            to_device.extend(ext["to_device"]["events"].as_array().unwrap().iter().map(|e| e["content"].clone()));
            global.extend(ext["account_data"]["global"].as_array().unwrap().iter().map(|e| e["type"].clone()));
            tags.extend(
                ext["account_data"]["rooms"][&room].as_array().into_iter().flatten().map(|e| e["content"].clone()),
            );
            if let Some(r) = ext["receipts"]["rooms"].get(&room) {
                receipt = Some(r.clone());
            }
            if let Some(t) = ext["typing"]["rooms"].get(&room) {
                typing = Some(t["content"]["user_ids"].clone());
            }
            if ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"] == 1 {
                otks = Some(1);
            }
            changed.extend(ext["e2ee"]["device_lists"]["changed"].as_array().unwrap().iter().cloned());
            pos = pos_of(&reply);
            next_batch = ext["to_device"]["next_batch"].as_str().unwrap().to_owned();
        }
        assert_eq!(to_device, [json!({"n": 1})], "[{}]", s.name);
        assert_eq!(global, [json!("org.example.a")], "[{}]", s.name);
        assert_eq!(tags, [json!({"tags": {"u.work": {}}})], "[{}]", s.name);
        let receipt = receipt.unwrap();
        assert_eq!(receipt["type"], "m.receipt");
        assert!(receipt["content"][&event_id]["m.read"][ALICE]["ts"].is_u64(), "[{}] {receipt}", s.name);
        assert_eq!(typing, Some(json!([ALICE])), "[{}]", s.name);
        assert!(changed.contains(&json!(ALICE)), "[{}] {changed:?}", s.name);

        // Acknowledged and unchanged data does not come again.
        let request = json!({"lists": lists, "extensions": {"to_device": {"since": next_batch}}});
        let again = sliding(&s, &bob, &format!("?pos={pos}"), &request).await;
        let ext = &again["extensions"];
        assert_eq!(ext["to_device"]["events"], json!([]), "[{}] {ext}", s.name);
        assert_eq!(ext["account_data"]["global"], json!([]), "[{}] {ext}", s.name);
        assert_eq!((ext["receipts"]["rooms"].clone(), ext["typing"]["rooms"].clone()), (json!({}), json!({})), "{ext}");
        assert_eq!(ext["e2ee"]["device_one_time_keys_count"]["signed_curve25519"], 1, "counts are always there");
        // A new connection gets the room's typing, receipts and account data whole.
        let whole = sliding(&s, &bob, "", &body).await;
        let ext = &whole["extensions"];
        assert_eq!(ext["typing"]["rooms"][&room]["content"]["user_ids"], json!([ALICE]), "[{}] {ext}", s.name);
        assert!(ext["receipts"]["rooms"][&room]["content"][&event_id].is_object(), "[{}] {ext}", s.name);
        let global = ext["account_data"]["global"].as_array().unwrap();
        assert!(global.iter().any(|e| e["type"] == "org.example.a"), "[{}] {ext}", s.name);
        assert!(ext["account_data"]["rooms"][&room].is_array(), "[{}] {ext}", s.name);
    }
}

/// What a reader finds of a room through each read endpoint: every event
/// any of them returned (ids and bodies), for asserting what must not leak.
struct Seen {
    ids: Vec<String>,
    text: String,
}

impl Server {
    /// Read `room` as `token`'s user through `/sync` (initial with left
    /// rooms, and incremental from `since`), `/messages` both ways,
    /// `/context` and `/relations` of `anchor`, `/event` of `hidden` (which
    /// must be 404) and `/search` for `word`.
    async fn everything_seen(
        &self,
        token: &str,
        room: &str,
        since: &str,
        anchor: &str,
        hidden: &str,
        word: &str,
    ) -> Seen {
        let filter = enc(r#"{"room":{"timeline":{"limit":1000},"include_leave":true}}"#);
        let mut bodies = vec![
            self.sync(token, &format!("filter={filter}")).await,
            self.sync(token, &format!("filter={filter}&since={since}")).await,
        ];
        for query in ["dir=b&limit=1000", "dir=f&limit=1000"] {
            let (status, page) =
                self.get(&format!("/_matrix/client/v3/rooms/{room}/messages?{query}"), Some(token)).await;
            assert!(status == 200 || status == 403, "[{}] /messages {status}: {page}", self.name);
            bodies.push(page);
        }
        let anchor = enc(anchor);
        for path in [
            format!("/_matrix/client/v3/rooms/{room}/context/{anchor}?limit=100"),
            format!("/_matrix/client/v1/rooms/{room}/relations/{anchor}"),
        ] {
            bodies.push(self.get(&path, Some(token)).await.1);
        }
        let (status, event) = self.event(token, room, hidden).await;
        assert_eq!((status, event["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "[{}] /event: {event}", self.name);
        let search = json!({"search_categories": {"room_events": {"search_term": word}}});
        let (status, mut found) = self
            .request(reqwest::Method::POST, "/_matrix/client/v3/search", Some(token), Some(&search.to_string()))
            .await;
        assert_eq!(status, 200, "[{}] /search: {found}", self.name);
        bodies.push(found["search_categories"]["room_events"]["results"].take());
        let mut ids = Vec::new();
        event_ids(&Value::Array(bodies.clone()), &mut ids);
        Seen { ids, text: Value::Array(bodies).to_string() }
    }
}

/// The ids of the events anywhere in `value` (not those a relation cites).
fn event_ids(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value) {
                    ("event_id", Value::String(id)) => out.push(id.clone()),
                    ("m.relates_to", _) => {}
                    _ => event_ids(value, out),
                }
            }
        }
        Value::Array(values) => values.iter().for_each(|value| event_ids(value, out)),
        _ => {}
    }
}

/// Issue 5's negatives: a user who left sees nothing later, and a user
/// invited to a `joined` room nothing from before the join, through any
/// of `/sync`, `/messages`, `/context`, `/event`, `/relations`, `/search`.
#[tokio::test]
async fn no_read_endpoint_shows_what_history_visibility_hides() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let reply_to = |root: &str, body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});

        // Bob leaves a shared room; what follows stays hidden from him.
        let (room, _) = s.shared_room(&alice, &bob).await;
        let root = s.send_text(&alice, &room, "r", "root while bob is here").await;
        s.settle(&bob, &root).await;
        let since = next_batch(&s.sync(&bob, "").await);
        s.client(Method::POST, &format!("/rooms/{room}/leave"), &bob, json!({})).await;
        let later = s.send_json(&alice, &room, "m.room.message", "l1", reply_to(&root, "secretword after leave")).await;
        let topic = json!({"topic": "secret topic after leave"});
        s.client(Method::PUT, &format!("/rooms/{room}/state/m.room.topic"), &alice, topic).await;
        let last = s.send_text(&alice, &room, "l2", "secretword last").await;
        s.settle(&alice, &last).await;
        let seen = s.everything_seen(&bob, &room, &since, &root, &later, "secretword").await;
        assert!(seen.ids.contains(&root), "[{}] the room is still readable up to the leave", s.name);
        for hidden in [&later, &last] {
            assert!(!seen.ids.contains(hidden), "[{}] after the leave: {hidden} in {}", s.name, seen.text);
        }
        assert!(!seen.text.contains("secret"), "[{}] after the leave: {}", s.name, seen.text);

        // Bob is invited to a `joined` room: nothing from before his join,
        // neither while invited nor once joined.
        let body = json!({"preset": "private_chat", "initial_state": [
            {"type": "m.room.history_visibility", "state_key": "", "content": {"history_visibility": "joined"}}]});
        let room = s.client(Method::POST, "/createRoom", &alice, body).await["room_id"].as_str().unwrap().to_owned();
        let root = s.send_text(&alice, &room, "p1", "secretword root before the join").await;
        s.client(Method::POST, &format!("/rooms/{room}/invite"), &alice, json!({"user_id": BOB})).await;
        let invited =
            s.send_json(&alice, &room, "m.room.message", "p2", reply_to(&root, "secretword while invited")).await;
        s.sync_until(&bob, "", |b| b["rooms"]["invite"].get(&room).is_some()).await;
        let seen = s.everything_seen(&bob, &room, &since, &root, &invited, "secretword").await;
        assert!(!seen.ids.contains(&root) && !seen.ids.contains(&invited), "[{}] while invited: {}", s.name, seen.text);
        assert!(!seen.text.contains("secretword"), "[{}] while invited: {}", s.name, seen.text);
        let (status, _) = s.event(&bob, &room, &root).await;
        assert_eq!(status, 404, "[{}]", s.name);

        s.client(Method::POST, &format!("/rooms/{room}/join"), &bob, json!({})).await;
        let after =
            s.send_json(&alice, &room, "m.room.message", "p3", reply_to(&root, "secretword after the join")).await;
        s.settle(&bob, &after).await;
        let seen = s.everything_seen(&bob, &room, &since, &after, &invited, "secretword").await;
        assert!(seen.ids.contains(&after), "[{}] what follows the join is seen: {}", s.name, seen.text);
        for hidden in [&root, &invited] {
            assert!(!seen.ids.contains(hidden), "[{}] before the join: {hidden} in {}", s.name, seen.text);
        }
        assert!(
            !seen.text.contains("before the join") && !seen.text.contains("while invited"),
            "[{}] {}",
            s.name,
            seen.text
        );
        let (status, body) =
            s.get(&format!("/_matrix/client/v1/rooms/{room}/relations/{}", enc(&root)), Some(&bob)).await;
        assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "[{}] {body}", s.name);
    }
}

/// `device_lists.left` and `/keys/changes`'s `left`: those who shared a
/// room with the user at the token and share none any more.
#[tokio::test]
async fn device_lists_left_names_who_no_longer_shares_a_room() {
    const CAROL: &str = "@carol:localhost";
    const DAN: &str = "@dan:localhost";
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let (one, two) = (s.create_room(ALICE).await, s.create_room(ALICE).await);
        s.membership(&one, BOB, BOB, "join").await;
        for user in [BOB, CAROL] {
            s.membership(&two, user, user, "join").await;
        }
        let last = s.message(&two, ALICE, "everyone is here").await;
        s.settle(&bob, &last).await;
        let left = |body: &Value| body["device_lists"]["left"].clone();
        let since = next_batch(&s.sync(&bob, "").await);
        let alice_since = next_batch(&s.sync(&alice, "").await);

        // Carol leaves the only room she shared with Bob; Dan comes and goes
        // in between, and was never shared at the token.
        s.membership(&two, CAROL, CAROL, "leave").await;
        s.membership(&two, DAN, DAN, "join").await;
        let gone = s.membership(&two, DAN, DAN, "leave").await;
        s.settle(&bob, &gone).await;
        let body = s.sync(&bob, &format!("since={since}")).await;
        assert_eq!(left(&body), json!([CAROL]), "[{}] {body}", s.name);
        let after = next_batch(&body);
        let (status, changes) =
            s.get(&format!("/_matrix/client/v3/keys/changes?from={since}&to={after}"), Some(&bob)).await;
        assert_eq!((status, changes["left"].clone()), (200, json!([CAROL])), "[{}] {changes}", s.name);
        assert_eq!(left(&s.sync(&alice, &format!("since={alice_since}")).await), json!([CAROL]), "[{}]", s.name);
        // Once told, not again.
        assert_eq!(left(&s.sync(&bob, &format!("since={after}")).await), json!([]), "[{}]", s.name);

        // Bob leaves one room: he still shares the other with Alice.
        let since = after;
        let gone = s.membership(&one, BOB, BOB, "leave").await;
        s.settle(&bob, &gone).await;
        let body = s.sync(&bob, &format!("since={since}")).await;
        assert_eq!(left(&body), json!([]), "[{}] {body}", s.name);
        // He leaves the other: Alice is gone for him, and he for her.
        let since = next_batch(&body);
        let alice_since = next_batch(&s.sync(&alice, "").await);
        let gone = s.membership(&two, BOB, BOB, "leave").await;
        s.settle(&alice, &gone).await;
        let body = s.sync(&bob, &format!("since={since}")).await;
        assert_eq!(left(&body), json!([ALICE]), "[{}] {body}", s.name);
        let body = s.sync(&alice, &format!("since={alice_since}")).await;
        assert_eq!(left(&body), json!([BOB]), "[{}] {body}", s.name);
    }
}

impl Server {
    /// Emit an event sent at `ts` (milliseconds); its id.
    async fn emit_at(&self, room: &str, sender: &str, kind: &str, content: Value, ts: u64) -> String {
        let mut stored = stored_event(room, sender, kind, None, content);
        stored.pdu["origin_server_ts"] = json!(ts);
        let event_id = stored.event_id.to_string();
        let record = OutputRecord::NewRoomEvent(NewRoomEvent {
            event: stored,
            room_version: "12".to_owned(),
            state_delta: StateDelta::default(),
            txn: None,
            historical: false,
        });
        self.bus.produce_json(OUTPUT_TOPIC, room, &record).await.unwrap();
        event_id
    }
}

/// An edit of `original` (`m.replace`) saying `body`.
fn edit_of(original: &str, body: &str) -> Value {
    json!({"msgtype": "m.text", "body": format!("* {body}"), "m.new_content": {"msgtype": "m.text", "body": body},
        "m.relates_to": {"rel_type": "m.replace", "event_id": original}})
}

/// A value without its `age` fields, which change from one request to the next.
fn ageless(mut value: Value) -> Value {
    match &mut value {
        Value::Object(fields) => {
            fields.remove("age");
            for (_, field) in fields.iter_mut() {
                *field = ageless(field.take());
            }
        }
        Value::Array(items) => {
            for item in items.iter_mut() {
                *item = ageless(item.take());
            }
        }
        _ => {}
    }
    value
}

const CAROL: &str = "@carol:localhost";
const DAVE: &str = "@dave:localhost";

/// Bundled aggregations: the latest valid edit, the thread summary and the
/// references, counting only what the viewer may see, on every endpoint.
#[tokio::test]
async fn served_events_bundle_edits_threads_and_references() {
    for s in servers().await {
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let room = s.create_room(ALICE).await;
        for user in [BOB, CAROL] {
            s.membership(&room, user, user, "join").await;
        }
        const T: u64 = 1_700_000_000_000;
        let root = s.emit_at(&room, ALICE, "m.room.message", json!({"msgtype": "m.text", "body": "root"}), T).await;
        // Bob's edit is the latest, but only the sender may edit.
        s.emit_at(&room, BOB, "m.room.message", edit_of(&root, "by bob"), T + 9).await;
        // A reaction-typed "edit" changes the type: not a replacement either.
        s.emit_at(&room, ALICE, "m.reaction", edit_of(&root, "other type"), T + 9).await;
        let second = s.emit_at(&room, ALICE, "m.room.message", edit_of(&root, "second"), T + 2).await;
        s.emit_at(&room, ALICE, "m.room.message", edit_of(&root, "first"), T + 1).await;
        let in_thread = |body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": root}});
        let reply = s.emit_at(&room, BOB, "m.room.message", in_thread("reply"), T + 3).await;
        let reference = s
            .emit_at(
                &room,
                ALICE,
                "m.key.verification.done",
                json!({"m.relates_to": {"rel_type": "m.reference", "event_id": root}}),
                T + 4,
            )
            .await;
        // What Carol never sees: she leaves before these.
        s.membership(&room, CAROL, CAROL, "leave").await;
        let latest = s.emit_at(&room, ALICE, "m.room.message", edit_of(&root, "latest"), T + 5).await;
        let last_reply = s.emit_at(&room, ALICE, "m.room.message", in_thread("last reply"), T + 6).await;
        s.settle(&bob, &last_reply).await;

        let bundle = |event: &Value| ageless(event["unsigned"]["m.relations"].clone());
        let (status, event) = s.event(&bob, &room, &root).await;
        assert_eq!(status, 200, "[{}] {event}", s.name);
        let seen = bundle(&event);
        assert_eq!(seen["m.replace"]["event_id"], latest, "[{}] {seen}", s.name);
        assert_eq!(seen["m.replace"]["sender"], ALICE);
        assert_eq!(seen["m.replace"]["content"]["m.new_content"], json!({"msgtype": "m.text", "body": "latest"}));
        assert_eq!(seen["m.replace"]["room_id"], room);
        assert_eq!(seen["m.thread"]["count"], 2, "[{}] {seen}", s.name);
        assert_eq!(seen["m.thread"]["current_user_participated"], true);
        assert_eq!(seen["m.thread"]["latest_event"]["event_id"], last_reply);
        assert_eq!(seen["m.thread"]["latest_event"]["content"]["body"], "last reply");
        assert_eq!(seen["m.reference"], json!({"chunk": [{"event_id": reference}]}));
        // The original itself is served unchanged.
        assert_eq!(event["content"]["body"], "root");

        // Carol: only what came before she left, and she took no part.
        let (status, event) = s.event(&carol, &room, &root).await;
        assert_eq!(status, 200, "[{}] {event}", s.name);
        let hers = bundle(&event);
        assert_eq!(hers["m.replace"]["event_id"], second, "[{}] {hers}", s.name);
        assert_eq!(hers["m.thread"]["count"], 1);
        assert_eq!(hers["m.thread"]["current_user_participated"], false);
        assert_eq!(hers["m.thread"]["latest_event"]["event_id"], reply);

        // The same bundle wherever Bob reads the root.
        let in_sync = s.sync(&bob, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":50}}}"#))).await;
        let root_in = |events: &[Value]| events.iter().find(|e| e["event_id"] == root).cloned().unwrap();
        let mut expected = seen.clone();
        expected["m.replace"].as_object_mut().unwrap().remove("room_id");
        expected["m.thread"]["latest_event"].as_object_mut().unwrap().remove("room_id");
        assert_eq!(bundle(&root_in(timeline(&in_sync, "join", &room))), expected, "[{}] /sync", s.name);
        let (_, messages) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&bob)).await;
        assert_eq!(bundle(&root_in(messages["chunk"].as_array().unwrap())), seen, "[{}] /messages", s.name);
        let path = format!("/_matrix/client/v3/rooms/{room}/context/{}", enc(&root));
        let (_, context) = s.get(&path, Some(&bob)).await;
        assert_eq!(bundle(&context["event"]), seen, "[{}] /context", s.name);
        let (_, threads) = s.get(&format!("/_matrix/client/v1/rooms/{room}/threads"), Some(&bob)).await;
        assert_eq!(bundle(&root_in(threads["chunk"].as_array().unwrap())), seen, "[{}] /threads", s.name);
        let search = json!({"search_categories": {"room_events": {"search_term": "root"}}});
        let (_, found) =
            s.request(reqwest::Method::POST, "/_matrix/client/v3/search", Some(&bob), Some(&search.to_string())).await;
        let result = &found["search_categories"]["room_events"]["results"][0]["result"];
        assert_eq!(bundle(result), seen, "[{}] /search {found}", s.name);

        // An event with no children has no bundle, and every event its age.
        let (_, event) = s.event(&bob, &room, &reply).await;
        assert!(event["unsigned"].get("m.relations").is_none(), "[{}] {event}", s.name);
        assert!(event["unsigned"]["age"].as_i64().unwrap() > 0, "[{}] {event}", s.name);

        // A redacted original bundles no edit.
        s.emit(&room, ALICE, "m.room.redaction", None, json!({"redacts": root})).await;
        let marker = s.message(&room, ALICE, "after the redaction").await;
        s.settle(&bob, &marker).await;
        let (_, event) = s.event(&bob, &room, &root).await;
        assert!(event["unsigned"]["m.relations"].get("m.replace").is_none(), "[{}] {event}", s.name);
    }
}

/// State events carry the entry they replaced: `replaces_state`,
/// `prev_content` and `prev_sender`; the first of a key carries none.
#[tokio::test]
async fn state_events_carry_what_they_replaced() {
    for s in servers().await {
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        s.membership(&room, BOB, BOB, "join").await;
        let first = s.emit(&room, ALICE, "m.room.topic", Some(""), json!({"topic": "one"})).await;
        let second = s.emit(&room, BOB, "m.room.topic", Some(""), json!({"topic": "two"})).await;
        s.settle(&bob, &second).await;

        let body = s.sync(&bob, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":50}}}"#))).await;
        let events = timeline(&body, "join", &room);
        let find = |id: &str| events.iter().find(|e| e["event_id"] == id).unwrap().clone();
        let unsigned = find(&second)["unsigned"].clone();
        assert_eq!(
            ageless(unsigned),
            json!({"replaces_state": first, "prev_content": {"topic": "one"}, "prev_sender": ALICE}),
            "[{}]",
            s.name
        );
        assert_eq!(ageless(find(&first)["unsigned"].clone()), json!({}), "[{}]", s.name);
        // Bob's own join replaced nothing; served by /event the same.
        let (_, event) = s.event(&bob, &room, &second).await;
        assert_eq!(event["unsigned"]["prev_content"], json!({"topic": "one"}), "[{}] {event}", s.name);
        let joined = events.iter().find(|e| e["type"] == "m.room.member" && e["state_key"] == BOB).unwrap();
        assert!(joined["unsigned"].get("prev_content").is_none(), "[{}] {joined}", s.name);
    }
}

/// A room with no name made by Alice, joined by Bob, with Carol invited;
/// the invite's event id.
async fn unnamed_room(s: &Server) -> (String, String) {
    let room = format!("!{}:localhost", alphanumeric(18));
    s.emit(&room, ALICE, "m.room.create", Some(""), json!({"room_version": "12"})).await;
    s.membership(&room, ALICE, ALICE, "join").await;
    s.membership(&room, BOB, BOB, "join").await;
    let invited = s.membership(&room, ALICE, CAROL, "invite").await;
    (room, invited)
}

/// `summary`: member counts and heroes on an initial sync and whenever
/// members, name or alias change; nothing otherwise.
#[tokio::test]
async fn sync_summary_counts_members_and_names_heroes() {
    for s in servers().await {
        let bob = s.register("bob").await;
        let (room, invited) = unnamed_room(&s).await;
        s.settle(&bob, &invited).await;
        let summary = |body: &Value| body["rooms"]["join"][&room]["summary"].clone();
        let body = s.sync(&bob, "").await;
        let expected = json!({"m.joined_member_count": 2, "m.invited_member_count": 1, "m.heroes": [ALICE, CAROL]});
        assert_eq!(summary(&body), expected, "[{}]", s.name);

        let message = s.message(&room, ALICE, "nothing about members").await;
        let body =
            s.sync_until(&bob, &format!("since={}", next_batch(&body)), |b| b.to_string().contains(&message)).await;
        assert_eq!(summary(&body), json!({}), "[{}] {body}", s.name);

        let joined = s.membership(&room, CAROL, CAROL, "join").await;
        let body =
            s.sync_until(&bob, &format!("since={}", next_batch(&body)), |b| b.to_string().contains(&joined)).await;
        let expected = json!({"m.joined_member_count": 3, "m.invited_member_count": 0, "m.heroes": [ALICE, CAROL]});
        assert_eq!(summary(&body), expected, "[{}] {body}", s.name);

        // Someone who left is no hero while joined or invited members remain.
        s.membership(&room, DAVE, DAVE, "join").await;
        let left = s.membership(&room, DAVE, DAVE, "leave").await;
        let body = s.sync_until(&bob, &format!("since={}", next_batch(&body)), |b| b.to_string().contains(&left)).await;
        assert_eq!(summary(&body)["m.heroes"], json!([ALICE, CAROL]), "[{}] {body}", s.name);

        // With nobody else left, those who left name the room, in order.
        let (alone, _) = unnamed_room(&s).await;
        s.membership(&alone, ALICE, ALICE, "leave").await;
        let rejected = s.membership(&alone, CAROL, CAROL, "leave").await;
        let body =
            s.sync_until(&bob, &format!("since={}", next_batch(&body)), |b| b.to_string().contains(&rejected)).await;
        let heroes = &body["rooms"]["join"][&alone]["summary"]["m.heroes"];
        assert_eq!(heroes, &json!([ALICE, CAROL]), "[{}] {body}", s.name);

        // A named room needs no heroes.
        let named = s.emit(&room, ALICE, "m.room.name", Some(""), json!({"name": "Named"})).await;
        let body =
            s.sync_until(&bob, &format!("since={}", next_batch(&body)), |b| b.to_string().contains(&named)).await;
        assert_eq!(summary(&body), json!({"m.joined_member_count": 3, "m.invited_member_count": 0}), "[{}]", s.name);
    }
}

/// The member state keys among `events`, sorted.
fn member_keys(events: &Value) -> Vec<String> {
    let events = events.as_array().unwrap_or_else(|| panic!("not events: {events}"));
    sorted(
        events
            .iter()
            .filter(|e| e["type"] == "m.room.member")
            .map(|e| e["state_key"].as_str().unwrap().to_owned())
            .collect(),
    )
}

/// Lazy-loading members: `/sync` state carries the timeline senders' member
/// events (and the user's own), once per device unless redundant members
/// are asked for; `/messages` carries its senders' in `state`.
#[tokio::test]
async fn lazy_loading_sends_only_the_members_the_timeline_needs() {
    const DAN: &str = "@dan:localhost";
    for s in servers().await {
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        for user in [BOB, CAROL, DAN] {
            s.membership(&room, user, user, "join").await;
        }
        s.message(&room, CAROL, "c1").await;
        let last = s.message(&room, DAN, "d1").await;
        s.settle(&bob, &last).await;

        let lazy = enc(r#"{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true}}}"#);
        let body = s.sync(&bob, &format!("filter={lazy}")).await;
        let joined = &body["rooms"]["join"][&room];
        assert_eq!(bodies(timeline(&body, "join", &room)), ["c1", "d1"], "[{}]", s.name);
        assert_eq!(member_keys(&joined["state"]["events"]), [BOB, CAROL, DAN], "[{}] {joined}", s.name);
        assert!(types(joined["state"]["events"].as_array().unwrap()).contains(&"m.room.name".to_owned()));
        // Without lazy loading, every member.
        let eager = s.sync(&bob, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":2}}}"#))).await;
        let eager_state = &eager["rooms"]["join"][&room]["state"]["events"];
        assert_eq!(member_keys(eager_state), [ALICE, BOB, CAROL, DAN], "[{}]", s.name);

        // Carol's member event reached this device; Alice's never did.
        let since = next_batch(&body);
        s.message(&room, CAROL, "c2").await;
        let last = s.message(&room, ALICE, "a1").await;
        let incremental =
            s.sync_until(&bob, &format!("since={since}&filter={lazy}"), |b| b.to_string().contains(&last)).await;
        assert_eq!(member_keys(&incremental["rooms"]["join"][&room]["state"]["events"]), [ALICE], "[{}]", s.name);
        let redundant = enc(
            r#"{"room":{"timeline":{"limit":2},"state":{"lazy_load_members":true,"include_redundant_members":true}}}"#,
        );
        let again = s.sync(&bob, &format!("since={since}&filter={redundant}")).await;
        assert_eq!(member_keys(&again["rooms"]["join"][&room]["state"]["events"]), [ALICE, CAROL], "[{}]", s.name);

        let messages = |filter: &str| format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2{filter}");
        let (status, page) =
            s.get(&messages(&format!("&filter={}", enc(r#"{"lazy_load_members":true}"#))), Some(&bob)).await;
        assert_eq!(status, 200, "[{}] {page}", s.name);
        assert_eq!(bodies(page["chunk"].as_array().unwrap()), ["a1", "c2"], "[{}]", s.name);
        assert_eq!(member_keys(&page["state"]), [ALICE, CAROL], "[{}] {page}", s.name);
        let (_, page) = s.get(&messages(""), Some(&bob)).await;
        assert_eq!(page["state"], json!([]), "[{}]", s.name);
    }
}

/// Ignored users' messages are left out of `/sync`, `/messages` and sliding
/// sync timelines, and their invites out of `/sync`; their state stays.
#[tokio::test]
async fn ignored_users_messages_and_invites_are_left_out() {
    use reqwest::Method;
    for s in servers().await {
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let room = s.create_room(CAROL).await;
        s.membership(&room, BOB, BOB, "join").await;
        s.membership(&room, ALICE, ALICE, "join").await;
        let ignore = json!({"ignored_users": {ALICE: {}}});
        s.client(Method::PUT, &format!("/user/{BOB}/account_data/m.ignored_user_list"), &bob, ignore).await;
        s.sync_until(&bob, "", |b| global_account_data(b).iter().any(|e| e["type"] == "m.ignored_user_list")).await;

        let hidden = s.message(&room, ALICE, "hidden").await;
        let topic = s.emit(&room, ALICE, "m.room.topic", Some(""), json!({"topic": "still state"})).await;
        let shown = s.message(&room, CAROL, "shown").await;
        let from_alice = s.create_room(ALICE).await;
        s.membership(&from_alice, ALICE, BOB, "invite").await;
        let from_carol = s.create_room(CAROL).await;
        s.membership(&from_carol, CAROL, BOB, "invite").await;
        s.settle(&carol, &shown).await;
        s.sync_until(&bob, "", |b| b["rooms"]["invite"].get(&from_carol).is_some()).await;

        let all = enc(r#"{"room":{"timeline":{"limit":50}}}"#);
        let body = s.sync(&bob, &format!("filter={all}")).await;
        let seen = ids(timeline(&body, "join", &room));
        assert!(seen.contains(&shown) && seen.contains(&topic), "[{}] {seen:?}", s.name);
        assert!(!seen.contains(&hidden), "[{}] {seen:?}", s.name);
        let invites: Vec<&String> = body["rooms"]["invite"].as_object().unwrap().keys().collect();
        assert_eq!(invites, [&from_carol], "[{}]", s.name);
        // Carol ignores nobody.
        let hers = s.sync(&carol, &format!("filter={all}")).await;
        assert!(ids(timeline(&hers, "join", &room)).contains(&hidden), "[{}]", s.name);

        let (_, page) = s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&bob)).await;
        let paged = ids(page["chunk"].as_array().unwrap());
        assert!(paged.contains(&shown) && !paged.contains(&hidden), "[{}] {paged:?}", s.name);

        let lists = json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 20, "required_state": []}}});
        let reply = sliding(&s, &bob, "", &lists).await;
        let slid = ids(reply["rooms"][&room]["timeline"].as_array().unwrap());
        assert!(slid.contains(&shown) && !slid.contains(&hidden), "[{}] {slid:?}", s.name);

        // Nor do their replies count in a thread's summary.
        let in_thread = |body: &str| json!({"msgtype": "m.text", "body": body, "m.relates_to": {"rel_type": "m.thread", "event_id": shown}});
        s.emit(&room, CAROL, "m.room.message", None, in_thread("from carol")).await;
        let ignored_reply = s.emit(&room, ALICE, "m.room.message", None, in_thread("from alice")).await;
        s.settle(&carol, &ignored_reply).await;
        let thread_of = async |user: &str| {
            let (_, event) = s.get(&format!("/_matrix/client/v3/rooms/{room}/event/{shown}"), Some(user)).await;
            event["unsigned"]["m.relations"]["m.thread"].clone()
        };
        let bobs = thread_of(&bob).await;
        assert_eq!(bobs["count"], 1, "[{}] {bobs}", s.name);
        assert_ne!(bobs["latest_event"]["event_id"], ignored_reply.as_str(), "[{}]", s.name);
        assert_eq!(thread_of(&carol).await["count"], 2, "[{}]", s.name);
    }
}

/// The sliding sync `e2ee` extension names who no longer shares a room.
#[tokio::test]
async fn sliding_sync_e2ee_names_who_left() {
    for s in servers().await {
        let bob = s.register("bob").await;
        let room = s.create_room(ALICE).await;
        for user in [BOB, CAROL] {
            s.membership(&room, user, user, "join").await;
        }
        let last = s.message(&room, ALICE, "all here").await;
        s.settle(&bob, &last).await;
        let body = json!({"lists": {"all": {"ranges": [[0, 9]], "timeline_limit": 1, "required_state": []}},
            "extensions": {"e2ee": {"enabled": true}}});
        let first = sliding(&s, &bob, "", &body).await;
        assert_eq!(first["extensions"]["e2ee"]["device_lists"]["left"], json!([]), "[{}]", s.name);

        let gone = s.membership(&room, CAROL, CAROL, "leave").await;
        s.settle(&bob, &gone).await;
        let next = sliding(&s, &bob, &format!("?pos={}", pos_of(&first)), &body).await;
        assert_eq!(next["extensions"]["e2ee"]["device_lists"]["left"], json!([CAROL]), "[{}] {next}", s.name);
        let after = sliding(&s, &bob, &format!("?pos={}", pos_of(&next)), &body).await;
        assert_eq!(after["extensions"]["e2ee"]["device_lists"]["left"], json!([]), "[{}]", s.name);
    }
}

impl Server {
    /// `GET /rooms/{room}/members{query}` as `token`'s user.
    async fn members(&self, token: &str, room: &str, query: &str) -> (u16, Value) {
        self.get(&format!("/_matrix/client/v3/rooms/{room}/members{query}"), Some(token)).await
    }

    /// The `(user, membership)` pairs `token`'s user gets from `/members{query}`, sorted.
    async fn member_list(&self, token: &str, room: &str, query: &str) -> Vec<(String, String)> {
        let (status, body) = self.members(token, room, query).await;
        assert_eq!(status, 200, "[{}] /members{query}: {body}", self.name);
        memberships(&body)
    }
}

/// The `(state_key, membership)` of each event of a `/members` reply, sorted.
fn memberships(reply: &Value) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = reply["chunk"]
        .as_array()
        .unwrap_or_else(|| panic!("no chunk: {reply}"))
        .iter()
        .map(|e| (e["state_key"].as_str().unwrap().to_owned(), e["content"]["membership"].as_str().unwrap().to_owned()))
        .collect();
    pairs.sort();
    pairs
}

/// `expected` in the form of [`memberships`].
fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> =
        expected.iter().map(|(user, membership)| ((*user).to_owned(), (*membership).to_owned())).collect();
    pairs.sort();
    pairs
}

/// `/members` now and at a `prev_batch` from before some joined, with the
/// `membership` and `not_membership` filters, under both prefixes.
#[tokio::test]
async fn members_now_and_at_an_earlier_token_with_filters() {
    const DAN: &str = "@dan:localhost";
    const ERIN: &str = "@erin:localhost";
    for s in servers().await {
        let alice = s.register("alice").await;
        let room = s.create_room(ALICE).await;
        s.membership(&room, ALICE, BOB, "invite").await;
        s.membership(&room, BOB, BOB, "join").await;
        let before = s.message(&room, ALICE, "before carol").await;
        s.settle(&alice, &before).await;
        let body = s.sync(&alice, &format!("filter={}", enc(r#"{"room":{"timeline":{"limit":1}}}"#))).await;
        assert_eq!(ids(timeline(&body, "join", &room)), [before], "[{}]", s.name);
        let prev_batch = body["rooms"]["join"][&room]["timeline"]["prev_batch"].as_str().unwrap().to_owned();
        s.membership(&room, ALICE, CAROL, "invite").await;
        let carol_join = s.membership(&room, CAROL, CAROL, "join").await;
        s.membership(&room, ALICE, DAN, "invite").await;
        s.membership(&room, ALICE, ERIN, "ban").await;
        let last = s.message(&room, ALICE, "after carol").await;
        s.settle(&alice, &last).await;

        let (status, now) = s.members(&alice, &room, "").await;
        assert_eq!(status, 200, "[{}] {now}", s.name);
        let everyone = pairs(&[(ALICE, "join"), (BOB, "join"), (CAROL, "join"), (DAN, "invite"), (ERIN, "ban")]);
        assert_eq!(memberships(&now), everyone, "[{}]", s.name);
        // Served like any other state event: client form, with what it replaced.
        for event in now["chunk"].as_array().unwrap() {
            assert_eq!((&event["type"], &event["room_id"]), (&json!("m.room.member"), &json!(room)), "{event}");
            assert!(event.get("hashes").is_none() && event["unsigned"]["age"].is_i64(), "[{}] {event}", s.name);
        }
        let carol = now["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == carol_join.as_str()).unwrap();
        assert_eq!(carol["unsigned"]["prev_content"], json!({"membership": "invite"}), "[{}] {carol}", s.name);
        let r0 = s.get(&format!("/_matrix/client/r0/rooms/{room}/members"), Some(&alice)).await;
        assert_eq!((r0.0, memberships(&r0.1)), (200, everyone.clone()), "[{}]", s.name);

        let at = format!("?at={prev_batch}");
        let then = pairs(&[(ALICE, "join"), (BOB, "join")]);
        assert_eq!(s.member_list(&alice, &room, &at).await, then, "[{}]", s.name);
        // A sync token names a point too.
        let next = next_batch(&s.sync(&alice, "").await);
        assert_eq!(s.member_list(&alice, &room, &format!("?at={next}")).await, everyone, "[{}]", s.name);

        let joined = pairs(&[(ALICE, "join"), (BOB, "join"), (CAROL, "join")]);
        for (query, expected) in [
            ("?membership=join".to_owned(), joined.clone()),
            ("?not_membership=join".to_owned(), pairs(&[(DAN, "invite"), (ERIN, "ban")])),
            ("?membership=ban".to_owned(), pairs(&[(ERIN, "ban")])),
            ("?not_membership=leave".to_owned(), everyone.clone()),
            ("?membership=join&not_membership=invite".to_owned(), joined),
            ("?membership=join&not_membership=join".to_owned(), vec![]),
            (format!("{at}&membership=invite"), vec![]),
            (format!("{at}&not_membership=knock"), then.clone()),
        ] {
            assert_eq!(s.member_list(&alice, &room, &query).await, expected, "[{}] {query}", s.name);
        }
    }
}

/// Someone who left, was kicked or banned gets the members as of that,
/// however late `at` is; an `at` from while they were in is honoured.
#[tokio::test]
async fn members_of_a_departed_room_stop_at_the_leave() {
    const DAN: &str = "@dan:localhost";
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let dan = s.register("dan").await;
        let room = s.create_room(ALICE).await;
        for user in [BOB, CAROL, DAN] {
            s.membership(&room, ALICE, user, "invite").await;
            s.membership(&room, user, user, "join").await;
        }
        let hello = s.message(&room, ALICE, "hello").await;
        s.settle(&bob, &hello).await;
        let while_in = next_batch(&s.sync(&bob, "").await);
        s.membership(&room, BOB, BOB, "leave").await;
        s.membership(&room, ALICE, CAROL, "ban").await;
        s.membership(&room, ALICE, DAN, "leave").await;
        s.membership(&room, ALICE, "@eve:localhost", "invite").await;
        s.membership(&room, "@eve:localhost", "@eve:localhost", "join").await;
        let last = s.message(&room, ALICE, "after they went").await;
        s.settle(&alice, &last).await;
        let later = format!("?at={}", next_batch(&s.sync(&alice, "").await));

        let all_in = pairs(&[(ALICE, "join"), (BOB, "join"), (CAROL, "join"), (DAN, "join")]);
        assert_eq!(s.member_list(&bob, &room, &format!("?at={while_in}")).await, all_in, "[{}]", s.name);
        for (who, token, expected) in [
            ("bob, who left", &bob, pairs(&[(ALICE, "join"), (BOB, "leave"), (CAROL, "join"), (DAN, "join")])),
            ("carol, banned", &carol, pairs(&[(ALICE, "join"), (BOB, "leave"), (CAROL, "ban"), (DAN, "join")])),
            ("dan, kicked", &dan, pairs(&[(ALICE, "join"), (BOB, "leave"), (CAROL, "ban"), (DAN, "leave")])),
        ] {
            for query in ["", later.as_str()] {
                assert_eq!(s.member_list(token, &room, query).await, expected, "[{}] {who} {query}", s.name);
            }
        }
        let now = pairs(&[(ALICE, "join"), (BOB, "leave"), (CAROL, "ban"), (DAN, "leave"), ("@eve:localhost", "join")]);
        assert_eq!(s.member_list(&alice, &room, "").await, now, "[{}]", s.name);
    }
}

/// Strangers and invitees are refused unless the room is world-readable;
/// malformed parameters are `400 M_INVALID_PARAM`.
#[tokio::test]
async fn members_are_refused_to_strangers_and_on_bad_requests() {
    for s in servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let carol = s.register("carol").await;
        let room = s.create_room(ALICE).await;
        let invite = s.membership(&room, ALICE, CAROL, "invite").await;
        s.settle(&alice, &invite).await;
        let before_readable = format!("?at={}", next_batch(&s.sync(&alice, "").await));
        let expect = |what: &str, got: (u16, Value), status: u16, code: &str| {
            assert_eq!((got.0, got.1["errcode"].as_str()), (status, Some(code)), "[{}] {what}: {}", s.name, got.1);
            assert!(got.1["error"].is_string(), "[{}] {what}: {}", s.name, got.1);
        };
        expect("a stranger", s.members(&bob, &room, "").await, 403, "M_FORBIDDEN");
        expect("an invitee", s.members(&carol, &room, "").await, 403, "M_FORBIDDEN");
        expect("an unknown room", s.members(&alice, "!nowhere:localhost", "").await, 403, "M_FORBIDDEN");
        let v3 = "/_matrix/client/v3/rooms";
        expect("no token", s.get(&format!("{v3}/{room}/members"), None).await, 401, "M_MISSING_TOKEN");
        for query in ["?at=garbage", "?at=", "?membership=joined", "?membership=", "?not_membership=JOIN"] {
            expect(query, s.members(&alice, &room, query).await, 400, "M_INVALID_PARAM");
        }
        // A malformed room id gets what `/messages` gives it.
        let messages = s.get(&format!("{v3}/not-a-room/messages?dir=b"), Some(&alice)).await;
        let members = s.get(&format!("{v3}/not-a-room/members"), Some(&alice)).await;
        assert_eq!((members.0, &members.1["errcode"]), (messages.0, &messages.1["errcode"]), "[{}]", s.name);
        assert_eq!(members.0, 403, "[{}] {}", s.name, members.1);

        // World-readable from here on: anyone reads the members, but not
        // from before.
        let readable = json!({"history_visibility": "world_readable"});
        let changed = s.emit(&room, ALICE, "m.room.history_visibility", Some(""), readable).await;
        s.settle(&alice, &changed).await;
        let expected = pairs(&[(ALICE, "join"), (CAROL, "invite")]);
        for (who, token) in [("a stranger", &bob), ("an invitee", &carol)] {
            assert_eq!(s.member_list(token, &room, "").await, expected, "[{}] {who}", s.name);
        }
        expect("before it was readable", s.members(&bob, &room, &before_readable).await, 403, "M_FORBIDDEN");
    }
}

/// An account deactivated with `erase`: whoever was joined when its
/// messages were sent still reads them; whoever joins afterwards reads
/// them redacted, through `/event`, `/messages` and `/sync`. Without
/// `erase`, a deactivated account's messages stay as they were.
#[tokio::test]
async fn an_erased_accounts_events_are_redacted_for_later_joiners() {
    use reqwest::Method;
    for s in full_servers().await {
        let alice = s.register("alice").await;
        let bob = s.register("bob").await;
        let dave = s.register("dave").await;
        let carol = s.register("carol").await;
        let (room, _) = s.shared_room(&bob, &alice).await;
        s.client(Method::POST, &format!("/rooms/{room}/join"), &dave, json!({})).await;
        let erased = s.send_text(&alice, &room, "a1", "alice's secret").await;
        let kept = s.send_text(&dave, &room, "d1", "dave's words").await;
        let deactivate = |user: &str, erase: bool| {
            let auth = json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                              "password": PASSWORD});
            json!({"auth": auth, "erase": erase})
        };
        s.client(Method::POST, "/account/deactivate", &alice, deactivate("alice", true)).await;
        s.client(Method::POST, "/account/deactivate", &dave, deactivate("dave", false)).await;
        s.client(Method::POST, &format!("/rooms/{room}/join"), &carol, json!({})).await;
        s.settle(&carol, &kept).await;

        let body_of = |event: &Value| event["content"]["body"].clone();
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, event) = s.event(&carol, &room, &erased).await;
            assert_eq!(status, 200, "[{}] {event}", s.name);
            if event["content"] == json!({}) {
                break;
            }
            assert!(Instant::now() < deadline, "[{}] never erased for carol: {event}", s.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, event) = s.event(&bob, &room, &erased).await;
        assert_eq!(body_of(&event), "alice's secret", "[{}] bob was joined then", s.name);
        let (_, event) = s.event(&carol, &room, &kept).await;
        assert_eq!(body_of(&event), "dave's words", "[{}] dave did not ask for erasure", s.name);

        let (status, page) =
            s.get(&format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=50"), Some(&carol)).await;
        assert_eq!(status, 200, "[{}] {page}", s.name);
        let found = page["chunk"].as_array().unwrap().iter().find(|e| e["event_id"] == erased.as_str()).cloned();
        assert_eq!(found.map(|e| e["content"].clone()), Some(json!({})), "[{}] {page}", s.name);
        let synced = s.sync(&carol, "").await;
        let timeline = synced["rooms"]["join"][&room]["timeline"]["events"].as_array().unwrap().clone();
        if let Some(event) = timeline.iter().find(|e| e["event_id"] == erased.as_str()) {
            assert_eq!(event["content"], json!({}), "[{}] {event}", s.name);
        }
        assert!(!timeline.iter().any(|e| body_of(e) == "alice's secret"), "[{}] {synced}", s.name);
    }
}
