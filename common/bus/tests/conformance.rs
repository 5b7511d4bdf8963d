//! The conformance suite every bus backend passes: order per key, no loss,
//! redelivery after a crash before commit, offsets per group, poison records
//! skipped and counted, request/reply with deadlines.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use myelin_bus::{
    Backend, Bus, BusError, EmbeddedBackend, HandleError, Handler, MemoryBackend, Record, Responder, RetryPolicy,
    Shutdown,
};
use myelin_storage::Db;
use myelin_testkit::TestDb;
use myelin_types::SystemClock;
use tokio::sync::{Notify, oneshot};

const TOPIC: &str = "conformance.topic";
const WAIT: Duration = Duration::from_secs(20);

/// A backend under test that can be "restarted": reopened from its durable
/// state, as a process would after a crash.
enum Subject {
    Memory(MemoryBackend),
    Embedded(TestDb),
    #[cfg(feature = "kafka")]
    Kafka(kafka::Cluster),
}

impl Subject {
    async fn all() -> Vec<Subject> {
        let mut subjects = vec![Subject::Memory(MemoryBackend::new(4))];
        for db in TestDb::both().await {
            subjects.push(Subject::Embedded(db));
        }
        #[cfg(feature = "kafka")]
        subjects.push(Subject::Kafka(kafka::Cluster::start().await));
        subjects
    }

    fn name(&self) -> &'static str {
        match self {
            Subject::Memory(_) => "memory",
            Subject::Embedded(db) => db.name,
            #[cfg(feature = "kafka")]
            Subject::Kafka(_) => "kafka",
        }
    }

    /// `name` made unique to this test: a Kafka cluster may be shared by
    /// tests and runs, while the other subjects are fresh per test.
    fn scoped(&self, name: &str) -> String {
        match self {
            #[cfg(feature = "kafka")]
            Subject::Kafka(cluster) => format!("{}{name}", cluster.prefix),
            _ => name.to_owned(),
        }
    }

    /// A fresh process's view of the same log.
    async fn open(&self) -> Bus {
        let backend: Arc<dyn Backend> = match self {
            Subject::Memory(memory) => Arc::new(memory.clone()),
            Subject::Embedded(db) => {
                Arc::new(EmbeddedBackend::open(Db::connect(&db.url).await.unwrap(), 4).await.unwrap())
            }
            #[cfg(feature = "kafka")]
            Subject::Kafka(cluster) => Arc::new(cluster.connect()),
        };
        Bus::new(backend, Arc::new(SystemClock)).with_retry_policy(RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_millis(20),
        })
    }
}

#[cfg(feature = "kafka")]
mod kafka {
    use std::time::Duration;

    use myelin_bus::{KafkaBackend, KafkaOptions};
    use myelin_testkit::KafkaBroker;

    /// A Kafka-protocol cluster owned by the test, and a topic prefix of its own.
    pub struct Cluster {
        broker: KafkaBroker,
        pub prefix: String,
    }

    impl Cluster {
        pub async fn start() -> Self {
            let prefix = format!("t{}.", myelin_types::random::alphanumeric(10));
            Self { broker: KafkaBroker::start().await, prefix }
        }

        /// A new client, as a restarted process would have.
        pub fn connect(&self) -> KafkaBackend {
            let options =
                KafkaOptions { partitions: 4, session_timeout: Duration::from_secs(6), ..KafkaOptions::default() };
            KafkaBackend::connect(&self.broker.brokers, options).unwrap()
        }
    }
}

/// Waits until `condition` holds, failing the test after [`WAIT`].
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Records every delivery and applies an idempotent effect keyed by payload.
#[derive(Default)]
struct Recorder {
    deliveries: Mutex<Vec<(String, String)>>,
    effects: Mutex<HashSet<String>>,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let payload = String::from_utf8(record.payload.clone()).unwrap();
        self.deliveries.lock().unwrap().push((record.key.clone(), payload.clone()));
        self.effects.lock().unwrap().insert(payload);
        Ok(())
    }
}

impl Recorder {
    fn delivered(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }

    fn effect_count(&self) -> usize {
        self.effects.lock().unwrap().len()
    }
}

#[tokio::test]
async fn records_of_a_key_arrive_in_order_and_none_is_lost() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        for seq in 0..300 {
            let key = format!("!room{}:example.org", seq % 10);
            bus.produce(&topic, &key, format!("{key}#{seq:04}").into_bytes()).await.unwrap();
        }
        let recorder = Arc::new(Recorder::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("order"), &topic, recorder.clone(), shutdown);
        eventually("300 deliveries", || recorder.delivered() >= 300).await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, payload) in recorder.deliveries.lock().unwrap().iter() {
            per_key.entry(key.clone()).or_default().push(payload.clone());
        }
        assert_eq!(per_key.len(), 10, "{}", subject.name());
        for (key, payloads) in per_key {
            let mut sorted = payloads.clone();
            sorted.sort();
            assert_eq!(payloads, sorted, "{}: order of {key}", subject.name());
            assert_eq!(payloads.len(), 30, "{}: count of {key}", subject.name());
        }
        assert_eq!(recorder.delivered(), 300, "{}: exactly once without crashes", subject.name());
    }
}

#[tokio::test]
async fn batches_keep_each_keys_order_among_single_records() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        let mut seq = 0;
        let mut next = |room: usize| {
            seq += 1;
            let key = format!("@user{room}:example.org");
            (key.clone(), format!("{key}#{seq:04}"))
        };
        for round in 0..10 {
            let (key, payload) = next(round % 5);
            bus.produce_json(&topic, &key, &payload).await.unwrap();
            let batch: Vec<(String, String)> = (0..20).map(|n| next(n % 5)).collect();
            bus.produce_json_batch(&topic, &batch).await.unwrap();
        }
        bus.produce_json_batch::<String>(&topic, &[]).await.unwrap();
        let recorder = Arc::new(Recorder::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("batches"), &topic, recorder.clone(), shutdown);
        eventually("210 deliveries", || recorder.delivered() >= 210).await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, payload) in recorder.deliveries.lock().unwrap().iter() {
            let payload: String = serde_json::from_str(payload).unwrap();
            assert!(payload.starts_with(key.as_str()), "{}: {payload} under {key}", subject.name());
            per_key.entry(key.clone()).or_default().push(payload);
        }
        assert_eq!(per_key.len(), 5, "{}", subject.name());
        for (key, payloads) in per_key {
            let mut sorted = payloads.clone();
            sorted.sort();
            assert_eq!(payloads, sorted, "{}: order of {key}", subject.name());
            assert_eq!(payloads.len(), 42, "{}: count of {key}", subject.name());
        }
        assert_eq!(recorder.delivered(), 210, "{}", subject.name());
    }
}

/// Applies runs of records at once; a run holding `poison` fails whole.
#[derive(Default)]
struct Batcher {
    batch_sizes: Mutex<Vec<usize>>,
    applied: Mutex<Vec<String>>,
}

#[async_trait]
impl Handler for Batcher {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        if record.payload == b"poison" {
            return Err(HandleError::Poison("cannot decode".into()));
        }
        self.applied.lock().unwrap().push(String::from_utf8(record.payload.clone()).unwrap());
        Ok(())
    }

    fn batches(&self) -> bool {
        true
    }

    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandleError> {
        if records.iter().any(|r| r.payload == b"poison") {
            return Err(HandleError::Poison("cannot decode".into()));
        }
        self.batch_sizes.lock().unwrap().push(records.len());
        let mut applied = self.applied.lock().unwrap();
        applied.extend(records.iter().map(|r| String::from_utf8(r.payload.clone()).unwrap()));
        Ok(())
    }
}

#[tokio::test]
async fn batch_handlers_apply_runs_at_once_and_fall_back_to_one_by_one() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        for n in 0..10 {
            bus.produce(&topic, "one-key", format!("a{n}").into_bytes()).await.unwrap();
        }
        let batcher = Arc::new(Batcher::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("batcher"), &topic, batcher.clone(), shutdown);
        eventually("the first run", || batcher.applied.lock().unwrap().len() >= 10).await;
        for payload in ["b0", "poison", "b1"] {
            bus.produce(&topic, "one-key", payload.as_bytes().to_vec()).await.unwrap();
        }
        eventually("the records around the poison one", || batcher.applied.lock().unwrap().len() >= 12).await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        let applied = batcher.applied.lock().unwrap().clone();
        let expected: Vec<String> = (0..10).map(|n| format!("a{n}")).chain(["b0".into(), "b1".into()]).collect();
        assert_eq!(applied, expected, "{}: each once, in order", subject.name());
        let sizes = batcher.batch_sizes.lock().unwrap().clone();
        assert!(sizes.iter().any(|&n| n > 1), "{}: runs were applied at once: {sizes:?}", subject.name());
        let poisoned = bus.backend().poison_count(&subject.scoped("batcher"), &topic).await.unwrap();
        assert_eq!(poisoned, 1, "{}", subject.name());
    }
}

/// Holds every record until released.
struct Gate {
    open: tokio::sync::Semaphore,
    handled: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Self { open: tokio::sync::Semaphore::new(0), handled: AtomicUsize::new(0) }
    }
}

#[async_trait]
impl Handler for Gate {
    async fn handle(&self, _: &Record) -> Result<(), HandleError> {
        self.open.acquire().await.expect("never closed").forget();
        self.handled.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn lag_of(group: &str, topic: &str) -> Option<i64> {
    let mut text = Vec::new();
    prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &prometheus::gather(), &mut text).ok()?;
    let (group, topic) = (format!("group=\"{group}\""), format!("topic=\"{topic}\""));
    let text = String::from_utf8(text).ok()?;
    let line = text.lines().find(|line| {
        line.starts_with("myelin_bus_consumer_lag_records{") && line.contains(&group) && line.contains(&topic)
    })?;
    line.rsplit(' ').next()?.parse().ok()
}

#[tokio::test]
async fn the_embedded_log_reports_each_groups_lag() {
    for db in TestDb::both().await {
        let subject = Subject::Embedded(db);
        let topic = subject.scoped("lag.topic");
        let group = format!("lag-{}", subject.name());
        let bus = subject.open().await;
        for n in 0..20 {
            bus.produce(&topic, &format!("k{n}"), b"x".to_vec()).await.unwrap();
        }
        let gate = Arc::new(Gate::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&group, &topic, gate.clone(), shutdown);
        eventually("the lag before the first batch", || lag_of(&group, &topic) == Some(20)).await;
        gate.open.add_permits(20);
        eventually("20 records handled", || gate.handled.load(Ordering::SeqCst) == 20).await;
        bus.produce(&topic, "k", b"x".to_vec()).await.unwrap();
        eventually("the lag after catching up", || lag_of(&group, &topic) == Some(1)).await;
        gate.open.add_permits(1);
        eventually("the last record handled", || gate.handled.load(Ordering::SeqCst) == 21).await;
        trigger.trigger();
        task.await.unwrap().unwrap();
    }
}

/// Applies its effect, then hangs on one record: the process "dies" there,
/// after the effect and before the commit.
struct DiesAfterEffect {
    inner: Recorder,
    victim: String,
    reached: Mutex<Option<oneshot::Sender<()>>>,
}

#[async_trait]
impl Handler for DiesAfterEffect {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        self.inner.handle(record).await?;
        if record.payload == self.victim.as_bytes() {
            if let Some(reached) = self.reached.lock().unwrap().take() {
                let _ = reached.send(());
            }
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_consumer_killed_between_effect_and_commit_loses_nothing_and_applies_nothing_twice() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        for n in 0..10 {
            bus.produce(&topic, "one-key", format!("event-{n}").into_bytes()).await.unwrap();
        }
        let (reached_tx, reached_rx) = oneshot::channel();
        let dying = Arc::new(DiesAfterEffect {
            inner: Recorder::default(),
            victim: "event-5".to_owned(),
            reached: Mutex::new(Some(reached_tx)),
        });
        let (_trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("crash"), &topic, dying.clone(), shutdown);
        tokio::time::timeout(WAIT, reached_rx).await.unwrap().unwrap();
        task.abort();
        let _ = task.await;
        drop(bus);

        // The restarted process shares the durable effects (a database
        // would); its consumer must see the uncommitted records again.
        let restarted = subject.open().await;
        let recorder = Arc::new(Recorder::default());
        *recorder.effects.lock().unwrap() = dying.inner.effects.lock().unwrap().clone();
        let (trigger, shutdown) = Shutdown::new();
        let task = restarted.consume(&subject.scoped("crash"), &topic, recorder.clone(), shutdown);
        eventually("redelivery", || recorder.deliveries.lock().unwrap().iter().any(|(_, p)| p == "event-9")).await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        let redelivered: Vec<String> = recorder.deliveries.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
        assert!(redelivered.contains(&"event-5".to_owned()), "{}: the record in flight is redelivered", subject.name());
        assert_eq!(recorder.effect_count(), 10, "{}: every effect exactly once", subject.name());
    }
}

#[tokio::test]
async fn each_group_has_its_own_offsets_that_survive_a_restart() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        for n in 0..20 {
            bus.produce(&topic, &format!("k{}", n % 3), format!("a{n}").into_bytes()).await.unwrap();
        }
        let first = Arc::new(Recorder::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("group-a"), &topic, first.clone(), shutdown);
        eventually("group a", || first.delivered() >= 20).await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        // Another group starts from the beginning.
        let other = Arc::new(Recorder::default());
        let (other_trigger, shutdown) = Shutdown::new();
        let other_task = bus.consume(&subject.scoped("group-b"), &topic, other.clone(), shutdown);
        eventually("group b", || other.delivered() >= 20).await;
        other_trigger.trigger();
        other_task.await.unwrap().unwrap();
        assert_eq!(other.delivered(), 20, "{}", subject.name());

        // Group a, restarted, resumes after its committed offsets.
        let restarted = subject.open().await;
        for n in 20..25 {
            restarted.produce(&topic, &format!("k{}", n % 3), format!("a{n}").into_bytes()).await.unwrap();
        }
        let resumed = Arc::new(Recorder::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = restarted.consume(&subject.scoped("group-a"), &topic, resumed.clone(), shutdown);
        eventually("group a resumed", || resumed.delivered() >= 5).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.trigger();
        task.await.unwrap().unwrap();
        let mut seen: Vec<String> = resumed.deliveries.lock().unwrap().iter().map(|(_, p)| p.clone()).collect();
        seen.sort();
        assert_eq!(seen, ["a20", "a21", "a22", "a23", "a24"], "{}", subject.name());
    }
}

/// Refuses some payloads: `poison` at once, `stuck` always transiently,
/// `flaky` transiently twice, `panic` by panicking.
#[derive(Default)]
struct Picky {
    recorder: Recorder,
    flaky_attempts: AtomicUsize,
}

#[async_trait]
impl Handler for Picky {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        match record.payload.as_slice() {
            b"poison" => Err(HandleError::Poison("cannot decode".into())),
            b"stuck" => Err(HandleError::Transient("database busy".into())),
            b"panic" => panic!("handler bug"),
            b"flaky" if self.flaky_attempts.fetch_add(1, Ordering::SeqCst) < 2 => {
                Err(HandleError::Transient("try again".into()))
            }
            _ => self.recorder.handle(record).await,
        }
    }
}

#[tokio::test]
async fn poison_records_are_recorded_skipped_and_counted() {
    for subject in Subject::all().await {
        let topic = subject.scoped(TOPIC);
        let bus = subject.open().await;
        for payload in ["ok-1", "poison", "ok-2", "stuck", "flaky", "panic", "ok-3"] {
            bus.produce(&topic, "same-partition", payload.as_bytes().to_vec()).await.unwrap();
        }
        let picky = Arc::new(Picky::default());
        let (trigger, shutdown) = Shutdown::new();
        let task = bus.consume(&subject.scoped("picky"), &topic, picky.clone(), shutdown);
        eventually("the record after the poison ones", || picky.recorder.effects.lock().unwrap().contains("ok-3"))
            .await;
        trigger.trigger();
        task.await.unwrap().unwrap();

        let handled = picky.recorder.effects.lock().unwrap().clone();
        let expected: HashSet<String> = ["ok-1", "ok-2", "flaky", "ok-3"].iter().map(|s| s.to_string()).collect();
        assert_eq!(handled, expected, "{}", subject.name());
        assert_eq!(picky.flaky_attempts.load(Ordering::SeqCst), 3, "{}: flaky retried until it worked", subject.name());
        let poisoned = bus.backend().poison_count(&subject.scoped("picky"), &topic).await.unwrap();
        assert_eq!(poisoned, 3, "{}: poison, stuck and panic are recorded", subject.name());
        assert_eq!(bus.backend().poison_count(&subject.scoped("other-group"), &topic).await.unwrap(), 0);
    }
}

/// Echoes requests, refuses `refuse`, counts what it answered.
#[derive(Default)]
struct Echo {
    answered: AtomicUsize,
    seen: Notify,
}

#[async_trait]
impl Responder for Echo {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        self.answered.fetch_add(1, Ordering::SeqCst);
        self.seen.notify_waiters();
        if request.payload == b"refuse" {
            return Err(HandleError::Poison("refused".into()));
        }
        if request.payload == b"busy" {
            return Err(HandleError::Transient("always busy".into()));
        }
        Ok([b"echo:".as_slice(), &request.payload].concat())
    }
}

#[tokio::test]
async fn requests_get_their_own_replies_and_failures_surface() {
    for subject in Subject::all().await {
        let topic = subject.scoped("echo.requests");
        let bus = subject.open().await;
        let echo = Arc::new(Echo::default());
        let (trigger, shutdown) = Shutdown::new();
        let server = bus.serve(&subject.scoped("echo"), &topic, echo.clone(), shutdown);

        let requests = (0..20).map(|n| {
            let (bus, topic) = (bus.clone(), topic.clone());
            async move {
                let reply = bus.request(&topic, &format!("k{n}"), format!("{n}").into_bytes(), WAIT).await.unwrap();
                assert_eq!(reply, format!("echo:{n}").into_bytes());
            }
        });
        futures::future::join_all(requests).await;

        let refused = bus.request(&topic, "k", b"refuse".to_vec(), WAIT).await;
        assert!(matches!(refused, Err(BusError::Remote { .. })), "{}: {refused:?}", subject.name());

        // A responder that keeps failing transiently answers "unavailable"
        // once its attempts are used up, long before the caller's deadline.
        let busy = bus.request(&topic, "k", b"busy".to_vec(), WAIT).await;
        assert!(
            matches!(&busy, Err(error @ BusError::Unavailable { .. }) if error.is_busy()),
            "{}: {busy:?}",
            subject.name()
        );

        let unanswered =
            bus.request(&subject.scoped("nobody.listens"), "k", b"x".to_vec(), Duration::from_millis(200)).await;
        assert!(matches!(unanswered, Err(BusError::Timeout { .. })), "{}: {unanswered:?}", subject.name());

        trigger.trigger();
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn requests_past_their_deadline_are_skipped() {
    for subject in Subject::all().await {
        let topic = subject.scoped("late.requests");
        let bus = subject.open().await;
        // Nobody serves yet: the request expires while queued.
        let expired = bus.request(&topic, "same-key", b"stale".to_vec(), Duration::from_millis(50)).await;
        assert!(matches!(expired, Err(BusError::Timeout { .. })));

        let echo = Arc::new(Echo::default());
        let (trigger, shutdown) = Shutdown::new();
        let server = bus.serve(&subject.scoped("late"), &topic, echo.clone(), shutdown);
        let fresh = bus.request(&topic, "same-key", b"fresh".to_vec(), WAIT).await.unwrap();
        assert_eq!(fresh, b"echo:fresh");
        // Same key, same partition: the stale one came first and was skipped.
        assert_eq!(echo.answered.load(Ordering::SeqCst), 1, "{}", subject.name());
        trigger.trigger();
        server.await.unwrap().unwrap();
    }
}
