//! Fork resolution through storage: a 10,000-member room in SQLite, two
//! forks off one event with 1,000 conflicting state changes each (every
//! member on them renames itself differently; on the first every tenth is
//! banned, on the second every tenth, another one, is kicked), then one
//! iteration processes a message citing both fork tips as prev events. Its
//! state before is the resolution of both forks, so the time includes
//! reading the forks' states and the events resolution needs from the
//! database, resolving and storing the result, through `roomserver.input`.
//!
//! `index` resolves with the auth-chain index; `rebuilding_index` takes the
//! room out of it before each iteration (untimed), as rooms stored before
//! it are, so that the merge first places the room's state events again.
//!
//! The members join from a fake remote server (whose key this benchmark
//! serves on the bus); the first fork arrives as timeline events, the
//! second as backfilled history, so that building the room resolves nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use myelin_bus::{Bus, EmbeddedBackend, HandleError, Record, Responder, Shutdown, ShutdownTrigger};
use myelin_config::Config;
use myelin_roomserver::api::*;
use myelin_roomserver::service;
use myelin_storage::{Db, sqlx, with_db};
use myelin_testkit::TestDb;
use myelin_types::signing::ServerSigningKey;
use myelin_types::{ErrorCode, MatrixError, SystemClock};
use ruma::signatures::{hash_and_sign_event, reference_hash};
use ruma::{CanonicalJsonValue, OwnedRoomId, OwnedUserId, RoomVersionId};
use serde_json::{Value, json};

const MEMBERS: usize = 10_000;
const CHANGES: usize = 1_000;
const BATCH: usize = 250;
const LOCAL: &str = "bench.example";
const REMOTE: &str = "remote.bench:8448";

fn remote_user(name: &str) -> String {
    format!("@{name}:{REMOTE}")
}

/// The remote server's side of the bus: it serves its key.
struct Peer {
    key_id: String,
    public_key: String,
}

#[async_trait]
impl Responder for Peer {
    async fn respond(&self, record: &Record) -> Result<Vec<u8>, HandleError> {
        let query: FederationQuery = record.json().map_err(|e| HandleError::Poison(e.to_string()))?;
        let reply: FederationQueryReply = match query {
            FederationQuery::ServerKeys { server_name, .. } if server_name.as_str() == REMOTE => {
                Ok(FederationQueryOk::ServerKeys {
                    keys: vec![VerifyKey {
                        key_id: self.key_id.clone(),
                        public_key: self.public_key.clone(),
                        valid_until_ts: Some(u64::MAX / 2),
                        expired_ts: None,
                    }],
                })
            }
            _ => Err(MatrixError::new(ErrorCode::NotFound, "unknown to the benchmark's peer")),
        };
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}

/// Signs PDUs as the remote server, each on top of a given event.
struct Remote {
    key: ServerSigningKey,
    version: RoomVersionId,
    room_id: OwnedRoomId,
    /// Auth events every event cites: the create event (before v12) and the power levels.
    base_auth: Vec<String>,
    join_rules: String,
    ts: u64,
}

impl Remote {
    fn pdu(&mut self, fields: Value, prev: &[&(String, i64)], auth: &[&str]) -> (String, i64, Value) {
        self.ts += 1;
        let depth = prev.iter().map(|(_, depth)| *depth).max().unwrap_or(0) + 1;
        let mut fields = fields;
        let object = fields.as_object_mut().expect("an object");
        object.insert("room_id".into(), json!(self.room_id));
        object.insert("prev_events".into(), json!(prev.iter().map(|(id, _)| id).collect::<Vec<_>>()));
        object.insert("depth".into(), json!(depth));
        object.insert("origin_server_ts".into(), json!(self.ts));
        object.insert("origin".into(), json!(REMOTE));
        let auth: Vec<&str> = self.base_auth.iter().map(String::as_str).chain(auth.iter().copied()).collect();
        object.insert("auth_events".into(), json!(auth));
        let rules = self.version.rules().expect("known version");
        let CanonicalJsonValue::Object(mut object) = CanonicalJsonValue::try_from(fields).expect("JSON") else {
            unreachable!("an object stays one")
        };
        hash_and_sign_event(REMOTE, &self.key.keypair, &mut object, &rules.redaction).expect("signs");
        let id = format!("${}", reference_hash(&object, &rules).expect("hashes"));
        (id, depth, serde_json::to_value(&object).expect("JSON"))
    }

    fn member(&mut self, sender: &str, target: &str, content: Value, prev: &(String, i64), auth: &[&str]) -> Event {
        let fields = json!({"type": "m.room.member", "sender": sender, "state_key": target, "content": content});
        let (id, depth, pdu) = self.pdu(fields, &[prev], auth);
        Event { at: (id, depth), pdu }
    }
}

struct Event {
    at: (String, i64),
    pdu: Value,
}

/// A running room server with the forked room, ready for merges.
struct Server {
    bus: Bus,
    db: Db,
    remote: Remote,
    moderator: String,
    moderator_join: String,
    tips: [(String, i64); 2],
    _stop_peer: ShutdownTrigger,
    _shutdown: ShutdownTrigger,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl Server {
    async fn input(&self, room_id: &OwnedRoomId, request: InputRequest) -> InputOk {
        let reply: InputReply =
            self.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await.expect("bus request");
        reply.expect("request succeeds")
    }

    async fn send_pdus(&self, kind: PduKind, pdus: Vec<Value>) {
        for batch in pdus.chunks(BATCH) {
            let request = InputPdus {
                origin: REMOTE.try_into().expect("server name"),
                room_id: self.remote.room_id.clone(),
                kind,
                pdus: batch.to_vec(),
            };
            let InputOk::PdusProcessed { results } =
                self.input(&self.remote.room_id, InputRequest::InputPdus(request)).await
            else {
                panic!("not a PDU reply")
            };
            for result in results {
                assert_eq!(result.outcome, PduOutcome::Accepted, "{result:?}");
            }
        }
    }

    async fn start(version: RoomVersionId) -> Self {
        let test_db = TestDb::sqlite();
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("signing.key"), ServerSigningKey::generate_file_contents()).expect("key file");
        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = LOCAL.to_owned();
        let db = Db::connect(&test_db.url).await.expect("database");
        let backend = EmbeddedBackend::open(db.clone(), 8).await.expect("embedded bus");
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let (trigger, shutdown) = Shutdown::new();
        service::start(Arc::new(config), db.clone(), bus.clone(), shutdown).await.expect("room server starts");
        let key = ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).expect("key");
        let peer = Peer { key_id: key.key_id(), public_key: key.public_key_base64() };
        let (stop_peer, peer_shutdown) = Shutdown::new();
        bus.serve("bench.peer", FEDERATION_QUERY_TOPIC, Arc::new(peer), peer_shutdown);

        let alice: OwnedUserId = format!("@alice:{LOCAL}").try_into().expect("user id");
        let create = CreateRoom {
            creator: alice.clone(),
            creator_profile: Default::default(),
            room_version: Some(version.to_string()),
            preset: Some("public_chat".to_owned()),
            visibility: None,
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            initial_state: Vec::new(),
            creation_content: None,
            power_level_content_override: None,
        };
        let reply: InputReply = bus
            .request_json(INPUT_TOPIC, alice.as_str(), &InputRequest::CreateRoom(create), REQUEST_TIMEOUT)
            .await
            .expect("bus request");
        let Ok(InputOk::RoomCreated { room_id }) = reply else { panic!("room not created: {reply:?}") };
        let moderator = remote_user("moderator");
        let mut server = Self {
            bus,
            db,
            remote: Remote {
                key,
                version: version.clone(),
                room_id: room_id.clone(),
                base_auth: Vec::new(),
                join_rules: String::new(),
                ts: 1_000_000,
            },
            moderator: moderator.clone(),
            moderator_join: String::new(),
            tips: [(String::new(), 0), (String::new(), 0)],
            _stop_peer: stop_peer,
            _shutdown: trigger,
            _dir: dir,
            _db: test_db,
        };

        // The moderator gets the power to ban and kick.
        let power = server.state_event(&alice, "m.room.power_levels").await;
        let mut levels = power["content"].clone();
        levels["users"][moderator.as_str()] = json!(100);
        let request = SendEvent {
            room_id: room_id.clone(),
            sender: alice.clone(),
            event_type: "m.room.power_levels".to_owned(),
            state_key: Some(String::new()),
            content: levels,
            txn: None,
            sender_is_guest: false,
            origin_server_ts: None,
        };
        server.input(&room_id, InputRequest::SendEvent(request)).await;
        let power = server.state_event(&alice, "m.room.power_levels").await;
        let join_rules = server.state_event(&alice, "m.room.join_rules").await;
        let mut base_auth = Vec::new();
        if version != RoomVersionId::V12 {
            let create = server.state_event(&alice, "m.room.create").await;
            base_auth.push(create["event_id"].as_str().expect("id").to_owned());
        }
        base_auth.push(power["event_id"].as_str().expect("id").to_owned());
        server.remote.base_auth = base_auth;
        server.remote.join_rules = join_rules["event_id"].as_str().expect("id").to_owned();
        let mut tip = (power["event_id"].as_str().expect("id").to_owned(), power["depth"].as_i64().expect("depth"));

        // The members join, the moderator first.
        let mut joins = Vec::new();
        let mut member_events = Vec::new();
        for name in std::iter::once("moderator".to_owned()).chain((0..MEMBERS).map(|n| format!("user{n}"))) {
            let user = remote_user(&name);
            let join_rules = server.remote.join_rules.clone();
            let event = server.remote.member(&user, &user, json!({"membership": "join"}), &tip, &[&join_rules]);
            tip = event.at.clone();
            member_events.push(event.at.0.clone());
            joins.push(event.pdu);
        }
        server.send_pdus(PduKind::Timeline, joins).await;
        server.moderator_join = member_events[0].clone();
        let members = &member_events[1..];

        // The forks: the first as timeline events, the second as history.
        let mut forks = [Vec::new(), Vec::new()];
        let mut tips = [tip.clone(), tip];
        server.remote.ts += 1_000_000;
        for (fork, (banned, label)) in [(0, "ban"), (5, "leave")].into_iter().enumerate() {
            for (n, member_join) in members.iter().enumerate().take(CHANGES) {
                let user = remote_user(&format!("user{n}"));
                let event = if n % 10 == banned {
                    let moderator_join = server.moderator_join.clone();
                    let content = json!({"membership": label});
                    server.remote.member(&moderator, &user, content, &tips[fork], &[&moderator_join, member_join])
                } else {
                    let content = json!({"membership": "join", "displayname": format!("fork {fork} {n}")});
                    let join_rules = server.remote.join_rules.clone();
                    server.remote.member(&user, &user, content, &tips[fork], &[&join_rules, member_join])
                };
                tips[fork] = event.at;
                forks[fork].push(event.pdu);
            }
        }
        let [first, second] = forks;
        server.send_pdus(PduKind::Timeline, first).await;
        server.send_pdus(PduKind::Backfill, second).await;
        server.tips = tips;
        server
    }

    /// The room's current state event of `kind` (empty state key), with its id.
    async fn state_event(&self, requester: &OwnedUserId, kind: &str) -> Value {
        let request = QueryRequest::RoomState {
            room_id: self.remote.room_id.clone(),
            requester: requester.clone(),
            event_type: Some(kind.to_owned()),
            state_key: Some(String::new()),
        };
        let reply: QueryReply = self
            .bus
            .request_json(QUERY_TOPIC, self.remote.room_id.as_str(), &request, REQUEST_TIMEOUT)
            .await
            .expect("bus request");
        let Ok(QueryOk::State { events }) = reply else { panic!("no state: {reply:?}") };
        let event = events.into_iter().next().expect("the state event");
        let mut pdu = event.pdu;
        pdu["event_id"] = json!(event.event_id);
        pdu
    }

    /// Take the room out of the auth-chain index, as if its events were
    /// stored before it: the next resolution places them again.
    async fn forget_auth_chain_index(&self) {
        with_db!(&self.db, pool => {
            sqlx::query("DELETE FROM roomserver_auth_chains").execute(pool).await.expect("delete");
            sqlx::query("DELETE FROM roomserver_auth_chain_links").execute(pool).await.expect("delete");
        });
    }

    /// Process one message on both fork tips; the time it took.
    async fn merge(&mut self, n: u64) -> Duration {
        let moderator_join = self.moderator_join.clone();
        let fields = json!({"type": "m.room.message", "sender": self.moderator,
            "content": {"msgtype": "m.text", "body": format!("merge {n}")}});
        let (_, _, pdu) = self.remote.pdu(fields, &[&self.tips[0], &self.tips[1]], &[&moderator_join]);
        let start = Instant::now();
        self.send_pdus(PduKind::Timeline, vec![pdu]).await;
        start.elapsed()
    }
}

fn fork_merge(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("fork_merge_sqlite_10k_members_2x1k_conflicts");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    // One version keeps the run to a few minutes (building the room takes most).
    let version = RoomVersionId::V11;
    let built = Instant::now();
    let mut server = runtime.block_on(Server::start(version.clone()));
    eprintln!("v{version}: room built in {:.1?}", built.elapsed());
    let mut n = 0;
    for index in ["index", "rebuilding_index"] {
        group.bench_function(format!("v{version}/{index}"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if index == "rebuilding_index" {
                            server.forget_auth_chain_index().await;
                        }
                        n += 1;
                        total += server.merge(n).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fork_merge);
criterion_main!(benches);
