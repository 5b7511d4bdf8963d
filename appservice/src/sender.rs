//! Delivery to one application service: its queued events in batches of
//! up to [`BATCH`], each a `PUT /_matrix/app/v1/transactions/{txnId}`.
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#put_matrixappv1transactionstxnid>
//!
//! One batch is in flight at a time, so the service sees events in queue
//! order. A batch keeps its transaction id until the service answers 2xx,
//! and is sent again, the same events under the same id, after any other
//! answer or none, with exponential backoff; nothing is ever dropped. The
//! consumer wakes the sender when it queues something; otherwise it sleeps.

use std::sync::Arc;
use std::time::Duration;

use myelin_bus::{BusError, Shutdown};
use myelin_config::appservice::AppService;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::AppServiceError;
use crate::metrics;
use crate::storage::{Batch, Storage};

/// Events per transaction, at most.
const BATCH: i64 = 100;
/// The first retry's delay; each further one doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long one transaction may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The HTTP client every sender shares.
pub fn client() -> Result<reqwest::Client, AppServiceError> {
    reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().map_err(|e| AppServiceError::Http(e.to_string()))
}

/// Delivers one service's queue.
pub struct Sender {
    pub service: AppService,
    /// The service's `url`, without a trailing slash.
    pub url: String,
    pub storage: Arc<Storage>,
    pub http: reqwest::Client,
    pub wake: Arc<Notify>,
}

impl Sender {
    /// Deliver until shutdown.
    pub fn spawn(self, mut shutdown: Shutdown) -> JoinHandle<Result<(), BusError>> {
        tokio::spawn(async move {
            let mut backoff = FIRST_BACKOFF;
            while !shutdown.is_triggered() {
                // A request cut short by shutdown is sent again, under the
                // same id, at the next start; a slow service must not hold
                // the process up.
                let sent = tokio::select! {
                    sent = self.send_next() => sent,
                    _ = shutdown.wait() => break,
                };
                match sent {
                    Ok(true) => backoff = FIRST_BACKOFF,
                    // Nothing queued: wait for the consumer.
                    Ok(false) => tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = shutdown.wait() => {}
                    },
                    Err(error) => {
                        let service = self.service.id();
                        tracing::warn!(service, %error, retry_in = ?backoff, "application service transaction failed");
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.wait() => {}
                        }
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            Ok(())
        })
    }

    /// Send the next batch; `false` when nothing is queued.
    async fn send_next(&self) -> Result<bool, AppServiceError> {
        let Some(batch) = self.storage.next_batch(self.service.id(), BATCH).await? else { return Ok(false) };
        if let Err(error) = self.put(&batch).await {
            metrics::transaction(self.service.id(), "failed");
            return Err(error);
        }
        metrics::transaction(self.service.id(), "delivered");
        self.storage.acknowledge(self.service.id(), batch.txn_id).await?;
        Ok(true)
    }

    /// One attempt at the batch. The hs_token goes in the header only: a
    /// query string would end up in the service's access logs.
    async fn put(&self, batch: &Batch) -> Result<(), AppServiceError> {
        let url = format!("{}/_matrix/app/v1/transactions/{}", self.url, batch.txn_id);
        let response = self
            .http
            .put(url)
            .bearer_auth(&self.service.registration.hs_token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body(batch))
            .send()
            .await
            .map_err(|e| AppServiceError::Delivery(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(AppServiceError::Delivery(format!("the service answered {status}")))
    }
}

/// `{"events": [...]}` from the stored events, each already JSON written
/// by this component, so the same batch always has the same body.
fn body(batch: &Batch) -> String {
    format!("{{\"events\":[{}]}}", batch.events.join(","))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_body_lists_the_events_in_order() {
        let batch = super::Batch { txn_id: 1, events: vec![r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned()] };
        let body: serde_json::Value = serde_json::from_str(&super::body(&batch)).unwrap();
        assert_eq!(body, serde_json::json!({"events": [{"a": 1}, {"b": 2}]}));
    }
}
