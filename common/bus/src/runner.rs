//! The consumer loop every backend shares: per-partition order, commit after
//! the effect, bounded retries, poison records recorded and skipped.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use futures::future::join_all;
use tokio::task::JoinHandle;

use crate::{Bus, BusError, Headers, Record, Shutdown, metrics};

/// How a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// Might succeed later (database busy, peer down): retried.
    Transient(String),
    /// Will never succeed (undecodable, violates an invariant): skipped now.
    Poison(String),
}

impl std::fmt::Display for HandleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Transient(reason) => write!(f, "transient: {reason}"),
            Self::Poison(reason) => write!(f, "poison: {reason}"),
        }
    }
}

/// The effect of a record. It must be idempotent: delivery is at least once.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, record: &Record) -> Result<(), HandleError>;

    /// Whether [`Handler::handle_batch`] is worth calling: the handler can
    /// apply many records at once (one transaction instead of one each).
    fn batches(&self) -> bool {
        false
    }

    /// Apply several records of one partition, in order, all or nothing.
    /// Any failure makes the runner handle them again one by one, with the
    /// usual retries and poison handling.
    async fn handle_batch(&self, records: &[Record]) -> Result<(), HandleError> {
        for record in records {
            self.handle(record).await?;
        }
        Ok(())
    }

    /// Called once when transient failures used up every attempt, before
    /// the record is skipped as poison.
    async fn gave_up(&self, _record: &Record, _reason: &str) {}
}

/// Answers a request record with reply bytes.
#[async_trait]
pub trait Responder: Send + Sync + 'static {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError>;
}

/// Attempts per record before a transient failure counts as poison.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, first_backoff: Duration::from_millis(50), max_backoff: Duration::from_secs(2) }
    }
}

const BATCH: usize = 256;

pub(crate) fn spawn_consumer(
    bus: Bus,
    group: String,
    topic: String,
    handler: Arc<dyn Handler>,
    shutdown: Shutdown,
) -> JoinHandle<Result<(), BusError>> {
    tokio::spawn(async move { run(bus, group, topic, handler, shutdown).await })
}

pub(crate) fn spawn_server(
    bus: Bus,
    group: String,
    topic: String,
    responder: Arc<dyn Responder>,
    shutdown: Shutdown,
) -> JoinHandle<Result<(), BusError>> {
    let handler = Arc::new(Server { bus: bus.clone(), responder });
    spawn_consumer(bus, group, topic, handler, shutdown)
}

async fn run(
    bus: Bus,
    group: String,
    topic: String,
    handler: Arc<dyn Handler>,
    mut shutdown: Shutdown,
) -> Result<(), BusError> {
    let mut consumer = bus.backend.consumer(&group, &topic).await?;
    loop {
        let batch = tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            batch = consumer.next_batch(BATCH) => batch?,
        };
        let mut by_partition: Vec<Vec<Record>> = Vec::new();
        for record in batch {
            match by_partition.iter_mut().find(|records| records[0].partition == record.partition) {
                Some(records) => records.push(record),
                None => by_partition.push(vec![record]),
            }
        }
        // Partitions proceed in parallel; within one, strictly in order.
        let ends =
            join_all(by_partition.iter().map(|records| handle_in_order(&bus, &group, handler.as_ref(), records))).await;
        for end in ends {
            let (partition, offset) = end?;
            consumer.commit(partition, offset).await?;
        }
    }
}

async fn handle_in_order(
    bus: &Bus,
    group: &str,
    handler: &dyn Handler,
    records: &[Record],
) -> Result<(crate::Partition, crate::Offset), BusError> {
    let last = records.last().expect("partition groups are never empty");
    if handler.batches() && records.len() > 1 {
        match AssertUnwindSafe(handler.handle_batch(records)).catch_unwind().await {
            Ok(Ok(())) => {
                metrics::handled_many(&last.topic, records.len());
                return Ok((last.partition, last.offset));
            }
            Ok(Err(error)) => {
                tracing::warn!(topic = %last.topic, partition = last.partition, records = records.len(), %error, "batch failed; handling its records one by one")
            }
            Err(_) => {
                tracing::warn!(topic = %last.topic, partition = last.partition, records = records.len(), error = "handler panicked", "batch failed; handling its records one by one")
            }
        }
    }
    for record in records {
        handle_one(bus, group, handler, record).await?;
    }
    Ok((last.partition, last.offset))
}

async fn handle_one(bus: &Bus, group: &str, handler: &dyn Handler, record: &Record) -> Result<(), BusError> {
    let policy = bus.retry;
    let mut backoff = policy.first_backoff;
    let mut last_error = String::new();
    for attempt in 1..=policy.attempts.max(1) {
        let outcome = AssertUnwindSafe(handler.handle(record)).catch_unwind().await;
        match outcome {
            Ok(Ok(())) => {
                metrics::handled(&record.topic);
                return Ok(());
            }
            Ok(Err(HandleError::Poison(reason))) => return poison(bus, group, record, &reason).await,
            Err(_) => return poison(bus, group, record, "handler panicked").await,
            Ok(Err(HandleError::Transient(reason))) => {
                tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, attempt, error = %reason, "handler failed; retrying");
                metrics::retried(&record.topic);
                last_error = reason;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(policy.max_backoff);
            }
        }
    }
    let reason = format!("gave up after {} attempts: {last_error}", policy.attempts);
    handler.gave_up(record, &reason).await;
    poison(bus, group, record, &reason).await
}

async fn poison(bus: &Bus, group: &str, record: &Record, reason: &str) -> Result<(), BusError> {
    tracing::error!(topic = %record.topic, partition = record.partition, offset = record.offset, group, error = %reason, "skipping poison record");
    metrics::poisoned(&record.topic);
    bus.backend.record_poison(group, record, reason).await
}

/// Adapts a [`Responder`] to the consumer loop: skips expired requests and
/// sends the reply (or the responder's refusal) to the caller's topic.
struct Server {
    bus: Bus,
    responder: Arc<dyn Responder>,
}

#[async_trait]
impl Handler for Server {
    async fn handle(&self, request: &Record) -> Result<(), HandleError> {
        let (Some(reply_to), Some(correlation_id)) = (&request.headers.reply_to, &request.headers.correlation_id)
        else {
            return Err(HandleError::Poison("request without reply_to or correlation_id".into()));
        };
        if request.headers.deadline_ms.is_some_and(|deadline| deadline < self.bus.clock.now_ms()) {
            metrics::expired(&request.topic);
            return Ok(());
        }
        let (payload, error, outcome) = match self.responder.respond(request).await {
            Ok(payload) => (payload, None, Ok(())),
            Err(HandleError::Transient(reason)) => return Err(HandleError::Transient(reason)),
            Err(HandleError::Poison(reason)) => (Vec::new(), Some(reason.clone()), Err(HandleError::Poison(reason))),
        };
        let headers = Headers { correlation_id: Some(correlation_id.clone()), error, ..Headers::default() };
        self.bus
            .produce_with(reply_to, correlation_id, headers, payload)
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        outcome
    }

    /// The caller learns at once that the request failed, instead of
    /// waiting out its deadline for a reply that will never come.
    async fn gave_up(&self, request: &Record, reason: &str) {
        let (Some(reply_to), Some(correlation_id)) = (&request.headers.reply_to, &request.headers.correlation_id)
        else {
            return;
        };
        let headers = Headers {
            correlation_id: Some(correlation_id.clone()),
            error: Some(reason.to_owned()),
            unavailable: true,
            ..Headers::default()
        };
        if let Err(error) = self.bus.produce_with(reply_to, correlation_id, headers, Vec::new()).await {
            tracing::warn!(topic = %request.topic, %error, "could not tell the caller its request failed");
        }
    }
}
