//! Federation ingest: the load generator, as a remote homeserver, has a
//! target user join its room, then pushes `events` messages over
//! `PUT /_matrix/federation/v1/send/{txnId}`, one transaction of at most
//! `per_transaction` PDUs at a time (as a server sends to one
//! destination), each event on top of the one before. The clock runs from
//! the first transaction to the last event reaching the target user's
//! `/sync`; each transaction's round trip is a latency sample.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::Target;
use crate::fake::FakeServer;
use crate::stats::{self, Errors};

/// Small sync responses: only whether the newest event arrived matters.
pub const FILTER: &str = r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}"#;
/// The most an ingest may take before it counts as failed.
const DEADLINE: Duration = Duration::from_secs(3600);

pub async fn run(
    target: &Target,
    tls_dir: &Path,
    federation_url: &str,
    events: usize,
    per_transaction: usize,
    warmup: usize,
) -> Result<Value> {
    let per_transaction = per_transaction.clamp(1, 50);
    let user = target.register("fi").await?;
    let target_name = user.user_id.split_once(':').context("user id without a server name")?.1;
    let fake = FakeServer::start(tls_dir, federation_url, target_name).await?;
    let room = fake.create_room(0)?;
    user.join_via(&room, &fake.name).await.context("joining the fake server's room")?;

    // Unmeasured: the target's first transaction from this origin (key
    // fetches, caches), waited for until it is visible.
    let since = user.sync_filtered(None, 0, Some(FILTER)).await?.body["next_batch"].as_str().unwrap_or("").to_owned();
    let (warmup_pdus, last) = fake.messages(&room, warmup.max(1), "warmup")?;
    for chunk in warmup_pdus.chunks(per_transaction) {
        let rejected = fake.send_transaction(chunk).await?;
        anyhow::ensure!(rejected.is_empty(), "warm-up PDUs rejected: {rejected:?}");
    }
    user.sync_until(&since, FILTER, Instant::now() + DEADLINE, |reply| has_event(reply, &room, &last)).await?;
    let since = user.sync_filtered(None, 0, Some(FILTER)).await?.body["next_batch"].as_str().unwrap_or("").to_owned();

    // Signed before the clock starts: signing is the remote server's work.
    let (pdus, last) = fake.messages(&room, events, "ingest")?;
    let started = Instant::now();
    let watcher = {
        let (room, since) = (room.clone(), since.clone());
        let user = std::sync::Arc::new(user);
        tokio::spawn(async move {
            user.sync_until(&since, FILTER, started + DEADLINE, |reply| has_event(reply, &room, &last)).await
        })
    };
    let mut latencies = stats::histogram();
    let mut errors = Errors::default();
    let mut transactions = 0;
    for chunk in pdus.chunks(per_transaction) {
        let sent = Instant::now();
        match fake.send_transaction(chunk).await {
            Ok(rejected) => {
                stats::record(&mut latencies, sent.elapsed());
                for (id, error) in rejected {
                    errors.note(format!("{id}: {error}"));
                }
            }
            Err(error) => errors.record(&error),
        }
        transactions += 1;
    }
    let sent_all = started.elapsed().as_secs_f64();
    let visible = watcher.await.context("sync watcher")??.saturating_duration_since(started).as_secs_f64();

    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let mut result = json!({
        "scenario": "federation_ingest",
        "case": format!("federation ingest: {events} events from one remote server, {per_transaction} per transaction"),
        "figures": [
            stats::figure("events/s", events as f64 / visible, true),
            stats::figure("transaction p50 ms", ms(0.50), false),
            stats::figure("transaction p99 ms", ms(0.99), false),
        ],
        "events": events,
        "per_transaction": per_transaction,
        "transactions": transactions,
        "seconds_until_visible": visible,
        "seconds_sending": sent_all,
        "transaction_latency_ms": stats::percentiles(&latencies),
    });
    errors.report_into(&mut result, "");
    Ok(result)
}

/// Whether a `/sync` response carries `event_id` in `room_id`'s timeline.
pub fn has_event(reply: &Value, room_id: &str, event_id: &str) -> bool {
    reply["rooms"]["join"][room_id]["timeline"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|event| event["event_id"] == event_id))
}
