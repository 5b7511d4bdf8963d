//! The federation sender: one worker per destination delivers the PDUs and EDUs
//! queued for it (`storage::sender`) as `/send` transactions, one in
//! flight at a time, at most 50 PDUs each, in queue order, retrying with
//! exponential backoff. The queue is a table, so a restart resumes where
//! delivery stopped; an unreachable destination delays only itself
//! (DESIGN.md invariant 5).
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#transactions>

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use myelin_bus::Shutdown;
use myelin_storage::Db;
use myelin_types::clock::SharedClock;
use serde_json::{Value, json};

use crate::client::{FederationClient, FederationRequest};
use crate::consumers::encode;
use crate::storage::sender::{self as store, Kind, Queued};

/// Kept beside a queued typing EDU: when it stops being worth sending.
pub(crate) const TYPING_EXPIRES: &str = "expires_ms";

/// The spec's most PDUs per transaction (EDUs, at most 100, fit with them).
const MAX_PDUS: i64 = 50;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Wakes the worker of each destination, starting it the first time.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    client: Arc<FederationClient>,
    clock: SharedClock,
    origin: String,
    shutdown: Shutdown,
    workers: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

impl Sender {
    pub fn new(db: Db, client: Arc<FederationClient>, clock: SharedClock, origin: String, shutdown: Shutdown) -> Self {
        let inner = Inner { db, client, clock, origin, shutdown, workers: Mutex::default() };
        Self { inner: Arc::new(inner) }
    }

    /// Start delivering to every destination that still has PDUs queued.
    pub async fn resume(&self) -> Result<(), myelin_storage::sqlx::Error> {
        for destination in store::destinations(&self.inner.db).await? {
            self.wake(&destination);
        }
        Ok(())
    }

    /// Something was queued for `destination`.
    pub fn wake(&self, destination: &str) {
        let mut workers = self.inner.workers.lock().expect("sender workers lock");
        if let Some(notify) = workers.get(destination) {
            // Stored as a permit if the worker is busy: no wake-up is lost.
            notify.notify_one();
            return;
        }
        let notify = Arc::new(tokio::sync::Notify::new());
        workers.insert(destination.to_owned(), notify.clone());
        tokio::spawn(deliver(self.inner.clone(), destination.to_owned(), notify));
    }
}

/// The worker of one destination, until shutdown.
async fn deliver(inner: Arc<Inner>, destination: String, notify: Arc<tokio::sync::Notify>) {
    let mut shutdown = inner.shutdown.clone();
    let mut backoff: Option<Duration> = None;
    while !shutdown.is_triggered() {
        let batch = match store::pending(&inner.db, &destination, MAX_PDUS).await {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%destination, %error, "reading the send queue failed");
                Vec::new()
            }
        };
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            tokio::select! {
                () = notify.notified() => continue,
                () = shutdown.wait() => return,
            }
        };
        // Named after the queue positions it carries, so a retry after a
        // restart reuses the id and the destination answers from its record.
        let txn_id = format!("{}-{}", first.seq, last.seq);
        let last_seq = last.seq;
        let now = inner.clock.now_ms();
        let (pdus, edus) = split(&batch, now);
        if pdus.is_empty() && edus.is_empty() {
            // Only typing notices that lapsed while waiting.
            if let Err(error) = store::delivered(&inner.db, &destination, last_seq).await {
                tracing::warn!(%destination, %error, "could not dequeue lapsed EDUs");
            }
            continue;
        }
        let body = json!({ "origin": inner.origin, "origin_server_ts": now, "pdus": pdus, "edus": edus });
        let path = format!("/_matrix/federation/v1/send/{}", encode(&txn_id));
        match inner.client.send(FederationRequest::put(&destination, path, body)).await {
            Ok(_) => {
                backoff = None;
                if let Err(error) = store::delivered(&inner.db, &destination, last_seq).await {
                    tracing::warn!(%destination, %error, "could not dequeue delivered PDUs");
                }
            }
            Err(error) => {
                let wait = backoff.map_or(FIRST_BACKOFF, |previous| (previous * 2).min(MAX_BACKOFF));
                backoff = Some(wait);
                tracing::info!(%destination, %error, retry_in = ?wait, "transaction not delivered");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.wait() => return,
                }
            }
        }
    }
}

/// A batch's PDUs and EDUs, in queue order, without typing notices that
/// have lapsed (a late "typing" would show someone typing who is not).
fn split(batch: &[Queued], now_ms: u64) -> (Vec<Value>, Vec<Value>) {
    let mut pdus = Vec::new();
    let mut edus = Vec::new();
    for queued in batch {
        let Ok(mut value) = serde_json::from_str::<Value>(&queued.pdu) else { continue };
        match queued.kind {
            Kind::Pdu => pdus.push(value),
            Kind::Edu => edus.push(value),
            Kind::Typing => {
                let expires_ms = value.get(TYPING_EXPIRES).and_then(Value::as_u64).unwrap_or(0);
                if let Some(edu) = value.as_object_mut().filter(|_| expires_ms > now_ms) {
                    edu.remove(TYPING_EXPIRES);
                    edus.push(value);
                }
            }
        }
    }
    (pdus, edus)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn lapsed_typing_notices_are_left_out_of_a_transaction() {
        let row = |seq, kind, value: Value| Queued { seq, kind, pdu: value.to_string() };
        let typing = |expires: u64| json!({"edu_type": "m.typing", "content": {}, TYPING_EXPIRES: expires});
        let batch = [
            row(1, Kind::Pdu, json!({"type": "m.room.message"})),
            row(2, Kind::Typing, typing(999)),
            row(3, Kind::Typing, typing(1001)),
            row(4, Kind::Edu, json!({"edu_type": "m.receipt", "content": {}})),
        ];
        let (pdus, edus) = split(&batch, 1000);
        assert_eq!(pdus, [json!({"type": "m.room.message"})]);
        assert_eq!(
            edus,
            [json!({"edu_type": "m.typing", "content": {}}), json!({"edu_type": "m.receipt", "content": {}})]
        );
    }
}
