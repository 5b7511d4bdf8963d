//! Local events through the room server's real input path: requests on
//! `roomserver.input` over the embedded bus, each event built, signed,
//! auth-checked and stored in SQLite (and PostgreSQL), with its output
//! record. One iteration sends 1,000 messages into the same room, so over a
//! run (warm-up and 10 samples) the room grows past 10,000 events;
//! criterion reports events per second. Requests are kept 32 in flight, so
//! the room server, which takes a room's requests one at a time, is never
//! idle waiting for the next.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use futures::StreamExt;
use myelin_bus::{Bus, EmbeddedBackend, Shutdown, ShutdownTrigger};
use myelin_config::Config;
use myelin_roomserver::api::{CreateRoom, INPUT_TOPIC, InputOk, InputReply, InputRequest, REQUEST_TIMEOUT, SendEvent};
use myelin_roomserver::service;
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use myelin_types::signing::ServerSigningKey;
use ruma::{OwnedRoomId, OwnedUserId};
use serde_json::json;

const EVENTS_PER_ITERATION: u64 = 1_000;
const IN_FLIGHT: usize = 32;

/// A running room server on one database, and the room the events go to.
struct Server {
    bus: Bus,
    room_id: OwnedRoomId,
    sender: OwnedUserId,
    /// Never triggered: the server runs until the benchmark process ends.
    _shutdown: ShutdownTrigger,
    _dir: tempfile::TempDir,
    _db: TestDb,
}

impl Server {
    async fn start(test_db: TestDb) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::write(dir.path().join("signing.key"), ServerSigningKey::generate_file_contents()).expect("key file");
        let mut config = Config::in_dir(dir.path().to_owned());
        config.global.server_name = "bench.example".to_owned();
        let db = Db::connect(&test_db.url).await.expect("database");
        let backend = EmbeddedBackend::open(db.clone(), 8).await.expect("embedded bus");
        let bus = Bus::new(Arc::new(backend), Arc::new(SystemClock));
        let (trigger, shutdown) = Shutdown::new();
        service::start(Arc::new(config), db, bus.clone(), shutdown).await.expect("room server starts");
        let sender = OwnedUserId::try_from("@alice:bench.example").expect("valid user id");
        let create = CreateRoom {
            creator: sender.clone(),
            creator_profile: Default::default(),
            room_version: None,
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
            .request_json(INPUT_TOPIC, sender.as_str(), &InputRequest::CreateRoom(create), REQUEST_TIMEOUT)
            .await
            .expect("bus request");
        let Ok(InputOk::RoomCreated { room_id }) = reply else { panic!("room not created: {reply:?}") };
        Self { bus, room_id, sender, _shutdown: trigger, _dir: dir, _db: test_db }
    }

    /// Send `count` messages, `IN_FLIGHT` at a time; the time it took.
    async fn send(&self, count: u64) -> Duration {
        let start = Instant::now();
        let sends = futures::stream::iter(0..count).map(|n| {
            let request = InputRequest::SendEvent(SendEvent {
                room_id: self.room_id.clone(),
                sender: self.sender.clone(),
                event_type: "m.room.message".to_owned(),
                state_key: None,
                content: json!({"msgtype": "m.text", "body": format!("message {n}")}),
                txn: None,
                sender_is_guest: false,
                origin_server_ts: None,
            });
            async move {
                let reply: InputReply = self
                    .bus
                    .request_json(INPUT_TOPIC, self.room_id.as_str(), &request, REQUEST_TIMEOUT)
                    .await
                    .expect("bus request");
                assert!(matches!(reply, Ok(InputOk::EventSent { .. })), "event refused: {reply:?}");
            }
        });
        sends.buffer_unordered(IN_FLIGHT).collect::<Vec<()>>().await;
        start.elapsed()
    }
}

fn persist(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut group = c.benchmark_group("local_events_one_room");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Elements(EVENTS_PER_ITERATION));
    for name in ["sqlite", "postgres"] {
        let server = runtime.block_on(async {
            let test_db = if name == "sqlite" { TestDb::sqlite() } else { TestDb::postgres().await };
            Server::start(test_db).await
        });
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += server.send(EVENTS_PER_ITERATION).await;
                    }
                    total
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, persist);
criterion_main!(benches);
