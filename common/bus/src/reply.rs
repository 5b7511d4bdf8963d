//! Request/reply over the log: a request carries a correlation id, the
//! caller's reply topic and a deadline; each process reads its own reply
//! topic and hands replies to the waiting callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OnceCell, oneshot};

use crate::backend::Backend;
use crate::{Bus, BusError, Headers, Record};

pub(crate) const REPLY_TOPIC_PREFIX: &str = "reply.";

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Record>>>>;

pub(crate) struct ReplyRouter {
    backend: Arc<dyn Backend>,
    topic: String,
    pending: Pending,
    listening: OnceCell<()>,
}

impl ReplyRouter {
    pub(crate) fn new(backend: Arc<dyn Backend>) -> Self {
        let topic = format!("{REPLY_TOPIC_PREFIX}{}", myelin_types::random::alphanumeric(16));
        Self { backend, topic, pending: Arc::default(), listening: OnceCell::new() }
    }

    /// Start reading this process's reply topic (once, on first request).
    async fn listen(&self) -> Result<(), BusError> {
        self.listening
            .get_or_try_init(|| async {
                let mut consumer = self.backend.consumer(&self.topic, &self.topic).await?;
                let pending = self.pending.clone();
                tokio::spawn(async move {
                    loop {
                        let batch = match consumer.next_batch(256).await {
                            Ok(batch) => batch,
                            Err(error) => {
                                tracing::error!(%error, "reply topic read failed");
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                continue;
                            }
                        };
                        let last = batch.last().map(|r| (r.partition, r.offset));
                        for record in batch {
                            deliver(&pending, record);
                        }
                        if let Some((partition, offset)) = last
                            && let Err(error) = consumer.commit(partition, offset).await
                        {
                            tracing::warn!(%error, "reply offset commit failed");
                        }
                    }
                });
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

fn deliver(pending: &Pending, record: Record) {
    let Some(id) = record.headers.correlation_id.clone() else { return };
    let waiter = pending.lock().expect("pending lock").remove(&id);
    // No waiter: the caller timed out already; the reply is dropped.
    if let Some(waiter) = waiter {
        let _ = waiter.send(record);
    }
}

pub(crate) async fn request(
    bus: &Bus,
    topic: &str,
    key: &str,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, BusError> {
    let router = &bus.replies;
    router.listen().await?;
    let correlation_id = myelin_types::random::alphanumeric(24);
    let (tx, rx) = oneshot::channel();
    router.pending.lock().expect("pending lock").insert(correlation_id.clone(), tx);
    let headers = Headers {
        correlation_id: Some(correlation_id.clone()),
        reply_to: Some(router.topic.clone()),
        deadline_ms: Some(bus.clock.now_ms() + timeout.as_millis() as u64),
        ..Headers::default()
    };
    if let Err(error) = bus.produce_with(topic, key, headers, payload).await {
        router.pending.lock().expect("pending lock").remove(&correlation_id);
        return Err(error);
    }
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(reply)) => match reply.headers.error {
            Some(reason) if reply.headers.unavailable => Err(BusError::Unavailable { topic: topic.to_owned(), reason }),
            Some(reason) => Err(BusError::Remote { topic: topic.to_owned(), reason }),
            None => Ok(reply.payload),
        },
        Ok(Err(_)) => Err(BusError::Closed),
        Err(_) => {
            router.pending.lock().expect("pending lock").remove(&correlation_id);
            Err(BusError::Timeout { topic: topic.to_owned(), after: timeout })
        }
    }
}
