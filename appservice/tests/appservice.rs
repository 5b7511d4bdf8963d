//! The application service component over a real embedded bus on SQLite
//! and PostgreSQL, fed by the real room server (events sent on
//! `roomserver.input`), delivering to a stand-in application service on a
//! loopback port that records every transaction it is sent.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use myelin_bus::{Bus, BusError, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_config::Config;
use myelin_roomserver::api::{CreateRoom, INPUT_TOPIC, InputOk, InputReply, InputRequest, REQUEST_TIMEOUT, SendEvent};
use myelin_storage::{Db, sqlx, with_db};
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use myelin_types::signing::ServerSigningKey;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(30);
const SERVER: &str = "example.org";
const ALICE: &str = "@alice:example.org";
const GHOST: &str = "@_bridge_ghost:example.org";
const HS_TOKEN: &str = "bridge-hs-token";

/// One `PUT /transactions/{txnId}` the stand-in received.
#[derive(Debug, Clone)]
struct Attempt {
    txn_id: String,
    authorization: Option<String>,
    events: Vec<Value>,
    accepted: bool,
}

/// An application service that records transactions. While `down`, or for
/// the next `fail_next` requests, it answers 500.
#[derive(Default)]
struct StandIn {
    attempts: Mutex<Vec<Attempt>>,
    down: AtomicBool,
    fail_next: AtomicU32,
}

async fn transaction(
    State(stand_in): State<Arc<StandIn>>,
    Path(txn_id): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    let failing = stand_in.down.load(Ordering::SeqCst)
        || stand_in.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let authorization = headers.get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let events = body["events"].as_array().cloned().unwrap_or_default();
    stand_in.attempts.lock().unwrap().push(Attempt { txn_id, authorization, events, accepted: !failing });
    if failing { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK }
}

impl StandIn {
    fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().unwrap().clone()
    }

    /// Events of acknowledged transactions, in the order they were sent.
    fn delivered(&self) -> Vec<Value> {
        self.attempts().into_iter().filter(|a| a.accepted).flat_map(|a| a.events).collect()
    }

    /// Bodies of the messages delivered from `room_id`, in order.
    fn messages_in(&self, room_id: &str) -> Vec<String> {
        self.delivered()
            .iter()
            .filter(|e| e["room_id"] == room_id && e["type"] == "m.room.message")
            .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Wait until `done` holds of the attempts so far.
    async fn wait_until(&self, what: &str, done: impl Fn(&[Attempt]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(&self.attempts()) {
            assert!(Instant::now() < deadline, "{what} never happened: {:#?}", self.attempts());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_for_event(&self, event_id: &str) {
        self.wait_until(&format!("delivery of {event_id}"), |attempts| {
            attempts.iter().any(|a| a.accepted && a.events.iter().any(|e| e["event_id"] == event_id))
        })
        .await;
    }
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

/// The component while it runs: its shutdown and its tasks.
type Running = (ShutdownTrigger, Vec<JoinHandle<Result<(), BusError>>>);

/// The room server on its own, and the application service component,
/// which can be stopped and started again on the same database.
struct Server {
    name: &'static str,
    bus: Bus,
    db: Db,
    config: Config,
    stand_in: Arc<StandIn>,
    stand_in_url: String,
    appservice: Option<Running>,
    _roomserver: ShutdownTrigger,
    dir: tempfile::TempDir,
    _db: TestDb,
}

impl Server {
    async fn start(test_db: TestDb) -> Self {
        myelin_testkit::capture_logs("myelin_appservice=debug,info");
        let db = Db::connect(&test_db.url).await.unwrap();
        let backend = EmbeddedBackend::open(db.clone(), 8).await.unwrap();
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.global.server_name = SERVER.to_owned();
        config.global.signing_key_path = dir.path().join("signing.key");
        std::fs::write(&config.global.signing_key_path, ServerSigningKey::generate_file_contents()).unwrap();
        let (trigger, shutdown) = Shutdown::new();
        myelin_roomserver::service::start(Arc::new(config.clone()), db.clone(), bus.clone(), shutdown).await.unwrap();
        let stand_in = Arc::new(StandIn::default());
        let router = axum::Router::new()
            .route("/_matrix/app/v1/transactions/{txn_id}", axum::routing::put(transaction))
            .with_state(stand_in.clone());
        let stand_in_url = serve(router).await;
        Self {
            name: test_db.name,
            bus,
            db,
            config,
            stand_in,
            stand_in_url,
            appservice: None,
            _roomserver: trigger,
            dir,
            _db: test_db,
        }
    }

    /// Register the bridge (users `@_bridge_*`, aliases `#_bridge_*`, rooms
    /// matching `rooms`) at the stand-in, and a service without a URL over
    /// the same users, then start the component.
    async fn start_appservice(&mut self, rooms: &str) {
        let bridge = format!(
            "id: bridge\nurl: \"{url}/\"\nas_token: bridge-as-token\nhs_token: {HS_TOKEN}\nsender_localpart: _bridge_bot\n\
             namespaces:\n  users: [{{exclusive: true, regex: '@_bridge_.*'}}]\n  aliases: [{{exclusive: false, regex: '#_bridge_.*'}}]\n  \
             rooms: [{{exclusive: false, regex: '{rooms}'}}]\n",
            url = self.stand_in_url,
        );
        let quiet = "id: quiet\nurl: null\nas_token: quiet-as-token\nhs_token: quiet-hs-token\nsender_localpart: _quiet_bot\n\
             namespaces:\n  users: [{exclusive: false, regex: '@_bridge_.*'}]\n";
        let mut files = Vec::new();
        for (name, text) in [("bridge.yaml", bridge.as_str()), ("quiet.yaml", quiet)] {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            files.push(path);
        }
        self.config.global.app_service_config_files = files;
        self.restart_appservice().await;
    }

    /// Start the component (again) on the same database and bus.
    async fn restart_appservice(&mut self) {
        self.stop_appservice().await;
        let (trigger, shutdown) = Shutdown::new();
        let config = Arc::new(self.config.clone());
        let started =
            myelin_appservice::service::start(config, self.db.clone(), self.bus.clone(), shutdown).await.unwrap();
        self.appservice = Some((trigger, started.tasks));
    }

    async fn stop_appservice(&mut self) {
        if let Some((trigger, tasks)) = self.appservice.take() {
            trigger.trigger();
            for task in tasks {
                task.await.unwrap().unwrap();
            }
        }
    }

    async fn input(&self, key: &str, request: InputRequest) -> InputOk {
        let reply: InputReply = self.bus.request_json(INPUT_TOPIC, key, &request, REQUEST_TIMEOUT).await.unwrap();
        reply.unwrap_or_else(|e| panic!("[{}] {e:?}", self.name))
    }

    /// A room created by Alice, inviting `invite`.
    async fn create_room(&self, invite: &[&str]) -> String {
        let request = InputRequest::CreateRoom(CreateRoom {
            creator: ALICE.try_into().unwrap(),
            creator_profile: Default::default(),
            room_version: None,
            preset: Some("public_chat".to_owned()),
            visibility: None,
            name: None,
            topic: None,
            invite: invite.iter().map(|u| (*u).try_into().unwrap()).collect(),
            is_direct: false,
            initial_state: Vec::new(),
            creation_content: None,
            power_level_content_override: None,
        });
        match self.input(ALICE, request).await {
            InputOk::RoomCreated { room_id } => room_id.to_string(),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    async fn send(
        &self,
        room_id: &str,
        sender: &str,
        event_type: &str,
        state_key: Option<&str>,
        content: Value,
    ) -> String {
        let request = InputRequest::SendEvent(SendEvent {
            room_id: room_id.try_into().unwrap(),
            sender: sender.try_into().unwrap(),
            event_type: event_type.to_owned(),
            state_key: state_key.map(str::to_owned),
            content,
            txn: None,
            sender_is_guest: false,
            origin_server_ts: None,
        });
        match self.input(room_id, request).await {
            InputOk::EventSent { event_id } => event_id.to_string(),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    async fn message(&self, room_id: &str, sender: &str, body: &str) -> String {
        self.send(room_id, sender, "m.room.message", None, json!({"msgtype": "m.text", "body": body})).await
    }

    async fn join(&self, room_id: &str, user: &str) -> String {
        self.send(room_id, user, "m.room.member", Some(user), json!({"membership": "join"})).await
    }

    /// Rows waiting in the component's queue for `service_id`.
    /// In a room with the bridge's ghost, "before" is delivered, then the
    /// service refuses the batch holding "queued", then the component
    /// stops (the service stays down). The room.
    async fn deliver_then_stop_on_a_refusal(&mut self) -> String {
        let room = self.create_room(&[GHOST]).await;
        self.start_appservice("!none").await;
        let before = self.message(&room, ALICE, "before").await;
        self.stand_in.wait_for_event(&before).await;
        self.stand_in.down.store(true, Ordering::SeqCst);
        let queued = self.message(&room, ALICE, "queued").await;
        self.stand_in
            .wait_until("an attempt at the queued event", |attempts| {
                attempts.iter().any(|a| !a.accepted && a.events.iter().any(|e| e["event_id"] == queued))
            })
            .await;
        self.stop_appservice().await;
        room
    }

    async fn queued(&self, service_id: &str) -> i64 {
        with_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM appservice_queue WHERE service_id = $1")
                .bind(service_id)
                .fetch_one(pool)
                .await
                .unwrap()
        })
    }
}

/// Every transaction id names one list of events, and no event is
/// acknowledged twice.
fn assert_transactions_are_stable(name: &str, attempts: &[Attempt]) {
    let mut by_txn: BTreeMap<&str, &Vec<Value>> = BTreeMap::new();
    for attempt in attempts {
        let first = by_txn.entry(&attempt.txn_id).or_insert(&attempt.events);
        assert_eq!(*first, &attempt.events, "[{name}] txn {} changed between attempts", attempt.txn_id);
        assert_eq!(attempt.authorization.as_deref(), Some(format!("Bearer {HS_TOKEN}").as_str()), "[{name}]");
    }
    let mut seen = HashSet::new();
    for attempt in attempts.iter().filter(|a| a.accepted) {
        for event in &attempt.events {
            assert!(seen.insert(event["event_id"].clone()), "[{name}] {} delivered twice", event["event_id"]);
        }
    }
}

#[tokio::test]
async fn events_of_namespaced_users_rooms_and_aliases_arrive_in_order_and_others_do_not() {
    for test_db in TestDb::both().await {
        let mut server = Server::start(test_db).await;
        let name = server.name;
        // Rooms made before the component starts: it learns them from the log.
        let bridged = server.create_room(&[GHOST]).await;
        let by_id = server.create_room(&[]).await;
        server.start_appservice(&by_id.replace('.', "\\.")).await;
        let aliased = server.create_room(&[]).await;
        let plain = server.create_room(&[]).await;

        server.join(&bridged, GHOST).await;
        for body in ["m1", "m2", "m3"] {
            server.message(&bridged, ALICE, body).await;
        }
        let by_id_message = server.message(&by_id, ALICE, "by room id").await;
        server.message(&aliased, ALICE, "before the alias").await;
        let alias = json!({"alias": "#_bridge_aliased:example.org"});
        server.send(&aliased, ALICE, "m.room.canonical_alias", Some(""), alias).await;
        let aliased_message = server.message(&aliased, ALICE, "by alias").await;
        server.message(&plain, ALICE, "unrelated").await;
        // The ghost's join concerns the bridge; after it, the whole room does.
        server.join(&plain, GHOST).await;
        server.message(&plain, ALICE, "with the ghost").await;
        // Once it has left, the room no longer does; its return is news again.
        server.send(&plain, GHOST, "m.room.member", Some(GHOST), json!({"membership": "leave"})).await;
        server.message(&plain, ALICE, "after the ghost left").await;
        let last = server.join(&plain, GHOST).await;

        let stand_in = &server.stand_in;
        for event_id in [&by_id_message, &aliased_message, &last] {
            stand_in.wait_for_event(event_id).await;
        }
        assert_eq!(stand_in.messages_in(&bridged), ["m1", "m2", "m3"], "[{name}]");
        let bridged_events: Vec<Value> = stand_in.delivered().into_iter().filter(|e| e["room_id"] == bridged).collect();
        let invite = &bridged_events[0];
        assert_eq!(
            (invite["state_key"].as_str(), invite["content"]["membership"].as_str()),
            (Some(GHOST), Some("invite"))
        );
        assert_eq!(bridged_events[1]["content"]["membership"], "join", "[{name}]");
        assert!(
            bridged_events.iter().all(|e| e.get("hashes").is_none() && e["event_id"].is_string()),
            "[{name}] client format"
        );
        assert_eq!(stand_in.messages_in(&by_id), ["by room id"], "[{name}]");
        assert_eq!(stand_in.messages_in(&aliased), ["by alias"], "[{name}]");
        assert_eq!(stand_in.messages_in(&plain), ["with the ghost"], "[{name}]");
        assert!(stand_in.delivered().iter().any(|e| e["room_id"] == by_id && e["type"] == "m.room.create"), "[{name}]");
        assert_transactions_are_stable(name, &stand_in.attempts());
        assert_eq!(server.queued("quiet").await, 0, "[{name}] a service without a URL gets nothing queued");
        assert_eq!(server.queued("bridge").await, 0, "[{name}] acknowledged batches are deleted");
        server.stop_appservice().await;
    }
}

#[tokio::test]
async fn a_failed_transaction_is_sent_again_with_the_same_id_and_events() {
    for test_db in TestDb::both().await {
        let mut server = Server::start(test_db).await;
        let name = server.name;
        let room = server.create_room(&[GHOST]).await;
        server.stand_in.fail_next.store(2, Ordering::SeqCst);
        server.start_appservice("!none").await;
        let event_id = server.message(&room, ALICE, "retry me").await;
        server.stand_in.wait_for_event(&event_id).await;

        let attempts = server.stand_in.attempts();
        assert_transactions_are_stable(name, &attempts);
        let failed: Vec<&Attempt> = attempts.iter().filter(|a| !a.accepted).collect();
        assert_eq!(failed.len(), 2, "[{name}] {attempts:#?}");
        assert_eq!(failed[0].txn_id, failed[1].txn_id, "[{name}]");
        assert!(
            attempts.iter().any(|a| a.accepted && a.txn_id == failed[0].txn_id),
            "[{name}] the failed txn is acknowledged"
        );
        assert_eq!(server.stand_in.messages_in(&room), ["retry me"], "[{name}]");
        server.stop_appservice().await;
    }
}

#[tokio::test]
async fn a_restart_resends_nothing_acknowledged_and_loses_nothing_queued() {
    for test_db in TestDb::both().await {
        let mut server = Server::start(test_db).await;
        let name = server.name;
        let room = server.deliver_then_stop_on_a_refusal().await;
        // Only in the log while the component is down.
        let while_down = server.message(&room, ALICE, "while down").await;
        server.stand_in.down.store(false, Ordering::SeqCst);
        server.restart_appservice().await;
        server.stand_in.wait_for_event(&while_down).await;

        let attempts = server.stand_in.attempts();
        assert_transactions_are_stable(name, &attempts);
        assert_eq!(server.stand_in.messages_in(&room), ["before", "queued", "while down"], "[{name}]");
        let refused = attempts.iter().find(|a| !a.accepted).unwrap();
        assert!(
            attempts.iter().any(|a| a.accepted && a.txn_id == refused.txn_id),
            "[{name}] same txn id after the restart"
        );
        server.stop_appservice().await;
    }
}

/// Events queued for a service that is then removed from the configuration
/// are dropped when the component starts without it; a service still
/// registered keeps its queue (see the test above).
#[tokio::test]
async fn a_service_no_longer_registered_loses_its_queue() {
    for test_db in TestDb::both().await {
        let mut server = Server::start(test_db).await;
        let name = server.name;
        server.deliver_then_stop_on_a_refusal().await;
        assert!(server.queued("bridge").await > 0, "[{name}] the refused event stays queued");

        // Only the service without a URL is left.
        server.config.global.app_service_config_files.retain(|path| path.ends_with("quiet.yaml"));
        server.restart_appservice().await;
        assert_eq!(server.queued("bridge").await, 0, "[{name}]");
        server.stop_appservice().await;
    }
}
