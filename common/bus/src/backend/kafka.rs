//! The distributed backend: topics on a Kafka-protocol cluster, one Kafka
//! consumer group per bus group, offsets committed only after the effect.
//!
//! Poison records: Kafka has no side table, so each one is appended to
//! `<topic>.poison`, keyed by the group that gave up on it, carrying the
//! original payload and a `myelin-poison` header (group, partition, offset,
//! key, reason) for operators. [`Backend::poison_count`] scans that topic up
//! to its high watermark; it is an operator/test query, not a hot path.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::{Backend, Consumer, partitions_for};
use crate::{BusError, Headers, Offset, Partition, Record, metrics};

/// Kafka header carrying [`Headers`] as JSON, the same encoding the embedded
/// log stores, so adding a field needs no new header.
const HEADERS_KEY: &str = "myelin-headers";
const POISON_KEY: &str = "myelin-poison";
/// How long a produce may wait for room in librdkafka's local queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on broker round trips of admin calls and the poison scan.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct KafkaOptions {
    /// Partitions of a topic the bus creates (reply topics get one); bounds
    /// how many processes of a group share the work.
    pub partitions: u32,
    /// Replication factor of created topics; -1 lets the cluster's
    /// `default.replication.factor` decide.
    pub replication: i32,
    /// Silence after which a group hands a member's partitions to the others.
    pub session_timeout: Duration,
}

impl Default for KafkaOptions {
    fn default() -> Self {
        // Kafka's smallest allowed session (`group.min.session.timeout.ms`):
        // a dead room server's rooms move to another instance within seconds.
        // (tansu, the test broker, also fails to evict members with longer ones.)
        Self { partitions: 8, replication: -1, session_timeout: Duration::from_secs(6) }
    }
}

pub struct KafkaBackend {
    brokers: String,
    options: KafkaOptions,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist, so each process asks to create a topic once.
    created: Mutex<HashSet<String>>,
}

impl KafkaBackend {
    /// Clients for the cluster at `brokers` (comma-separated host:port).
    /// No connection is made until the first use.
    pub fn connect(brokers: &str, options: KafkaOptions) -> Result<Self, BusError> {
        let producer = client_config(brokers)
            // Idempotence keeps retried sends from duplicating or reordering
            // records of a partition; it requires acks=all.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Java's partitioner: a key lands on the same partition whichever
            // client (or tool) produced it.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "1")
            .create()?;
        let admin = client_config(brokers).create()?;
        Ok(Self { brokers: brokers.to_owned(), options, producer, admin, created: Mutex::default() })
    }

    /// Create `topic` unless this process already saw it exist. Creating up
    /// front (instead of broker auto-creation) fixes the partition count.
    async fn ensure_topic(&self, topic: &str) -> Result<(), BusError> {
        if self.created.lock().expect("topics lock").contains(topic) {
            return Ok(());
        }
        let partitions = partitions_for(topic, self.options.partitions) as i32;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.options.replication));
        let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        for result in self.admin.create_topics([&new], &options).await? {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => return Err(BusError::CreateTopic { topic, code }),
            }
        }
        self.created.lock().expect("topics lock").insert(topic.to_owned());
        Ok(())
    }

    async fn send(
        &self,
        topic: &str,
        key: &str,
        headers: Option<OwnedHeaders>,
        payload: &[u8],
    ) -> Result<(Partition, Offset), BusError> {
        self.ensure_topic(topic).await?;
        let mut record = FutureRecord::to(topic).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        let delivery = self.producer.send(record, QUEUE_TIMEOUT).await.map_err(|(error, _)| error)?;
        Ok((delivery.partition as Partition, delivery.offset))
    }
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("client.id", "myelin");
    config
}

fn poison_topic(topic: &str) -> String {
    format!("{topic}.poison")
}

/// What a poison record says about the record it stands for.
#[derive(Serialize, Deserialize)]
struct PoisonNote {
    group: String,
    partition: Partition,
    offset: Offset,
    key: String,
    reason: String,
}

#[async_trait]
impl Backend for KafkaBackend {
    async fn produce(
        &self,
        topic: &str,
        key: &str,
        headers: &Headers,
        payload: &[u8],
    ) -> Result<(Partition, Offset), BusError> {
        let headers = if headers.is_empty() {
            None
        } else {
            let json = serde_json::to_vec(headers)?;
            Some(OwnedHeaders::new().insert(Header { key: HEADERS_KEY, value: Some(&json) }))
        };
        self.send(topic, key, headers, payload).await
    }

    /// All records queued at once, in order; librdkafka batches them per partition.
    async fn produce_batch(&self, topic: &str, records: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let sends = records.iter().map(|(key, payload)| self.send(topic, key, None, payload));
        futures::future::try_join_all(sends).await?;
        Ok(())
    }

    async fn consumer(&self, group: &str, topic: &str) -> Result<Box<dyn Consumer>, BusError> {
        self.ensure_topic(topic).await?;
        let consumer: StreamConsumer<LagReporter> = client_config(&self.brokers)
            .set("group.id", group)
            // Offsets move only through `commit`, after the handler's effect.
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", self.options.session_timeout.as_millis().to_string())
            // Kafka answers a fetch as soon as records arrive; some
            // Kafka-protocol brokers only at this deadline. A short one bounds
            // each hop's latency there, at the cost of an idle fetch per
            // consumer every 50 ms.
            .set("fetch.wait.max.ms", "50")
            .set("statistics.interval.ms", "5000")
            .create_with_context(LagReporter { group: group.to_owned() })?;
        consumer.subscribe(&[topic])?;
        Ok(Box::new(KafkaConsumer { consumer: Arc::new(consumer), topic: topic.to_owned(), delivered: HashMap::new() }))
    }

    async fn record_poison(&self, group: &str, record: &Record, reason: &str) -> Result<(), BusError> {
        let note = serde_json::to_vec(&PoisonNote {
            group: group.to_owned(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            reason: reason.to_owned(),
        })?;
        let headers = OwnedHeaders::new().insert(Header { key: POISON_KEY, value: Some(&note) });
        self.send(&poison_topic(&record.topic), group, Some(headers), &record.payload).await?;
        Ok(())
    }

    async fn poison_count(&self, group: &str, topic: &str) -> Result<u64, BusError> {
        // librdkafka wants a group id even for a consumer that only assigns
        // partitions; this one never joins or commits, so it stays unused.
        let scanner: BaseConsumer = client_config(&self.brokers).set("group.id", "myelin.poison-scan").create()?;
        let (group, topic) = (group.to_owned(), poison_topic(topic));
        // The scan is a series of blocking round trips; keep it off the runtime.
        tokio::task::spawn_blocking(move || count_poison(&scanner, &group, &topic))
            .await
            .map_err(|_| BusError::Closed)?
    }
}

/// Distinct records `group` poisoned, read from `topic` up to its high
/// watermark. Distinct, because a poison record written just before a crash
/// is written again when its record is redelivered.
fn count_poison(scanner: &BaseConsumer, group: &str, topic: &str) -> Result<u64, BusError> {
    let metadata = scanner.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
    let Some(partitions) = metadata.topics().iter().find(|t| t.name() == topic && t.error().is_none()) else {
        return Ok(0);
    };
    let mut ends = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    for partition in partitions.partitions() {
        let (low, high) = scanner.fetch_watermarks(topic, partition.id(), REQUEST_TIMEOUT)?;
        if high > low {
            ends.insert(partition.id(), high);
            assignment.add_partition_offset(topic, partition.id(), KafkaOffset::Offset(low))?;
        }
    }
    scanner.assign(&assignment)?;
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut seen = HashSet::new();
    while !ends.is_empty() {
        if std::time::Instant::now() > deadline {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut).into());
        }
        let Some(message) = scanner.poll(Duration::from_millis(100)) else { continue };
        let message = message?;
        if ends.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
            ends.remove(&message.partition());
        }
        if message.key() != Some(group.as_bytes()) {
            continue;
        }
        let note = message.headers().and_then(|h| h.iter().find(|h| h.key == POISON_KEY)).and_then(|h| h.value);
        if let Some(note) = note {
            let note: PoisonNote = serde_json::from_slice(note)?;
            seen.insert((note.partition, note.offset));
        }
    }
    Ok(seen.len() as u64)
}

/// Publishes the group's lag from librdkafka's periodic statistics.
struct LagReporter {
    group: String,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        for (topic, stats) in &statistics.topics {
            // Partition -1 is librdkafka's internal "unassigned" bucket; a lag
            // of -1 means not known yet.
            let lag: i64 = stats
                .partitions
                .values()
                .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
                .map(|p| p.consumer_lag)
                .sum();
            metrics::consumer_lag(&self.group, topic, lag);
        }
    }
}

impl ConsumerContext for LagReporter {
    /// Which partitions this process gained or lost: how an operator sees
    /// room server instances share the rooms and take over from each other.
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(group = %self.group, partitions = ?partition_ids(list), "partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(group = %self.group, partitions = ?partition_ids(list), "partitions revoked")
            }
            Rebalance::Error(error) => tracing::warn!(group = %self.group, %error, "rebalance failed"),
        }
    }
}

fn partition_ids(list: &TopicPartitionList) -> Vec<i32> {
    list.elements().iter().map(|element| element.partition()).collect()
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer<LagReporter>>,
    topic: String,
    /// Highest offset handed out per partition: a record at or below it was
    /// delivered before (the group rebalanced and rewound to the commit).
    delivered: HashMap<Partition, Offset>,
}

impl KafkaConsumer {
    /// Errors librdkafka reports on the consumer queue are informational (it
    /// reconnects and refetches by itself); only a fatal one ends the consumer.
    fn check(&self, error: KafkaError) -> Result<(), BusError> {
        match error {
            KafkaError::MessageConsumption(code) => {
                tracing::warn!(topic = %self.topic, error = %code, "kafka consumer error; librdkafka retries");
                Ok(())
            }
            error => Err(error.into()),
        }
    }

    fn accept(&mut self, message: &BorrowedMessage<'_>) -> Record {
        let partition = message.partition() as Partition;
        let offset = message.offset();
        let seen = self.delivered.entry(partition).or_insert(-1);
        if offset <= *seen {
            metrics::redelivered(&self.topic);
        }
        *seen = (*seen).max(offset);
        let headers = match message.headers().and_then(|h| h.iter().find(|h| h.key == HEADERS_KEY)) {
            // Any Kafka client can write to a topic: a bad header must not
            // stop the consumer. Without headers a request is poison to its
            // responder, so it is recorded and skipped like any other.
            Some(Header { value: Some(json), .. }) => serde_json::from_slice(json).unwrap_or_else(|error| {
                tracing::warn!(topic = %self.topic, partition, offset, %error, "undecodable bus headers; ignored");
                Headers::default()
            }),
            _ => Headers::default(),
        };
        Record {
            topic: message.topic().to_owned(),
            partition,
            offset,
            key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
            headers,
            payload: message.payload().unwrap_or_default().to_vec(),
        }
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<Record>, BusError> {
        let consumer = self.consumer.clone();
        let mut batch = Vec::new();
        // Wait for the first record; then take what is already fetched,
        // without waiting, so a batch never delays a record. Only the first
        // await can be cancelled, and `recv` is cancel-safe.
        while batch.is_empty() {
            match consumer.recv().await {
                Ok(message) => batch.push(self.accept(&message)),
                Err(error) => self.check(error)?,
            }
        }
        while batch.len() < max {
            match consumer.recv().now_or_never() {
                Some(Ok(message)) => batch.push(self.accept(&message)),
                Some(Err(error)) => self.check(error)?,
                None => break,
            }
        }
        Ok(batch)
    }

    async fn commit(&mut self, partition: Partition, offset: Offset) -> Result<(), BusError> {
        // Kafka stores the next offset to read; ours is the last one handled.
        let mut offsets = TopicPartitionList::new();
        offsets.add_partition_offset(&self.topic, partition as i32, KafkaOffset::Offset(offset + 1))?;
        let consumer = self.consumer.clone();
        let committed = tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
            .await
            .map_err(|_| BusError::Closed)?;
        match committed {
            Ok(()) => Ok(()),
            // The partition moved to another member in a rebalance: it
            // resumes from the previous commit, so the records are handled
            // again there (at least once), not lost.
            Err(KafkaError::ConsumerCommit(
                code @ (RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::AssignmentLost),
            )) => {
                tracing::warn!(topic = %self.topic, partition, offset, error = %code, "commit lost to a rebalance");
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}
