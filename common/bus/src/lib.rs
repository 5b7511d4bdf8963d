//! The append-only log that components talk through (DESIGN.md §3).
//!
//! A [`Bus`] wraps one [`Backend`] (embedded table, memory, or Kafka with the
//! `kafka` feature) and
//! adds what every backend shares: the consumer loop with its commit and
//! poison-record policy ([`Bus::consume`]), and request/reply with a
//! correlation id and a deadline ([`Bus::request`], [`Bus::serve`]).
//!
//! Delivery is at least once: a handler's effect must be keyed so that a
//! redelivered record changes nothing (DESIGN.md invariant 6).

mod backend;
mod metrics;
mod record;
mod reply;
mod runner;

use std::sync::Arc;
use std::time::Duration;

use myelin_types::clock::SharedClock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use backend::embedded::EmbeddedBackend;
#[cfg(feature = "kafka")]
pub use backend::kafka::{KafkaBackend, KafkaOptions};
pub use backend::memory::MemoryBackend;
pub use backend::{Backend, Consumer};
pub use record::{Headers, Offset, Partition, Record};
pub use runner::{HandleError, Handler, Responder, RetryPolicy};

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("storage: {0}")]
    Storage(#[from] myelin_storage::StorageError),
    #[error("database: {0}")]
    Sqlx(#[from] myelin_storage::sqlx::Error),
    #[error("request to {topic} timed out after {after:?}")]
    Timeout { topic: String, after: Duration },
    #[error("responder on {topic} failed: {reason}")]
    Remote { topic: String, reason: String },
    #[error("responder on {topic} is unavailable: {reason}")]
    Unavailable { topic: String, reason: String },
    #[error("payload encoding: {0}")]
    Codec(#[from] serde_json::Error),
    #[error("bus is shut down")]
    Closed,
    #[cfg(feature = "kafka")]
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[cfg(feature = "kafka")]
    #[error("kafka: creating topic {topic}: {code}")]
    CreateTopic { topic: String, code: rdkafka::types::RDKafkaErrorCode },
}

impl BusError {
    /// The responder did not answer in time or kept failing on something
    /// that may pass: worth a 503 and a later retry, not a 500.
    pub fn is_busy(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::Unavailable { .. })
    }
}

/// Signals every consumer loop to stop after its current record.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// The sending side of [`Shutdown`].
pub struct ShutdownTrigger(watch::Sender<bool>);

impl Shutdown {
    pub fn new() -> (ShutdownTrigger, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (ShutdownTrigger(tx), Shutdown(rx))
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown was requested.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

impl ShutdownTrigger {
    pub fn trigger(&self) {
        let _ = self.0.send(true);
    }
}

/// The handle components hold: cheap to clone, one per process.
#[derive(Clone)]
pub struct Bus {
    backend: Arc<dyn Backend>,
    clock: SharedClock,
    replies: Arc<reply::ReplyRouter>,
    retry: RetryPolicy,
}

impl Bus {
    pub fn new(backend: Arc<dyn Backend>, clock: SharedClock) -> Self {
        let replies = Arc::new(reply::ReplyRouter::new(backend.clone()));
        Self { backend, clock, replies, retry: RetryPolicy::default() }
    }

    /// Override how often a failing record is retried before it is skipped.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Append a record; records with the same key keep their order.
    pub async fn produce(&self, topic: &str, key: &str, payload: Vec<u8>) -> Result<(Partition, Offset), BusError> {
        self.produce_with(topic, key, Headers::default(), payload).await
    }

    pub async fn produce_with(
        &self,
        topic: &str,
        key: &str,
        headers: Headers,
        payload: Vec<u8>,
    ) -> Result<(Partition, Offset), BusError> {
        let at = self.backend.produce(topic, key, &headers, &payload).await?;
        metrics::produced(topic);
        Ok(at)
    }

    /// Serialize `value` as JSON and append it.
    pub async fn produce_json<T: Serialize>(
        &self,
        topic: &str,
        key: &str,
        value: &T,
    ) -> Result<(Partition, Offset), BusError> {
        self.produce(topic, key, serde_json::to_vec(value)?).await
    }

    /// Serialize each `(key, value)` as JSON and append them all in one
    /// round trip where the backend can.
    pub async fn produce_json_batch<T: Serialize>(&self, topic: &str, records: &[(String, T)]) -> Result<(), BusError> {
        let encoded = records
            .iter()
            .map(|(key, value)| Ok((key.clone(), serde_json::to_vec(value)?)))
            .collect::<Result<Vec<_>, serde_json::Error>>()?;
        self.backend.produce_batch(topic, &encoded).await?;
        metrics::produced_many(topic, encoded.len());
        Ok(())
    }

    /// Run `handler` over `topic` as consumer group `group` until `shutdown`.
    /// Records of one partition are handled one at a time, in order; the
    /// group's offset is committed only after the handler returned.
    pub fn consume(
        &self,
        group: &str,
        topic: &str,
        handler: Arc<dyn Handler>,
        shutdown: Shutdown,
    ) -> JoinHandle<Result<(), BusError>> {
        runner::spawn_consumer(self.clone(), group.to_owned(), topic.to_owned(), handler, shutdown)
    }

    /// Answer requests on `topic` as group `group`. Requests past their
    /// deadline are skipped unanswered: the caller has given up on them.
    pub fn serve(
        &self,
        group: &str,
        topic: &str,
        responder: Arc<dyn Responder>,
        shutdown: Shutdown,
    ) -> JoinHandle<Result<(), BusError>> {
        runner::spawn_server(self.clone(), group.to_owned(), topic.to_owned(), responder, shutdown)
    }

    /// Send a request keyed by `key` and wait for its reply, at most `timeout`.
    pub async fn request(
        &self,
        topic: &str,
        key: &str,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, BusError> {
        reply::request(self, topic, key, payload, timeout).await
    }

    /// [`Bus::request`] with JSON on both sides.
    pub async fn request_json<Q: Serialize, A: DeserializeOwned>(
        &self,
        topic: &str,
        key: &str,
        request: &Q,
        timeout: Duration,
    ) -> Result<A, BusError> {
        let reply = self.request(topic, key, serde_json::to_vec(request)?, timeout).await?;
        Ok(serde_json::from_slice(&reply)?)
    }
}
