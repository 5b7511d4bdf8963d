//! Send-to-sync latency: a receiver long-polls `/sync` in a room; a probe
//! sender sends a ping there and the sample is the time from the start of
//! the send request to the `/sync` response carrying it. Optionally
//! `load_senders` other users send continuously, each into its own room,
//! for the whole measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use tokio::task::AbortHandle;

use crate::Target;
use crate::client::Client;
use crate::stats::{self, Errors};

/// A sample that has not arrived after this long counts as an error.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn run(target: &Target, samples: usize, warmup: usize, load_senders: usize) -> Result<Value> {
    let sender = target.register("pa").await?;
    let receiver = Arc::new(target.register("pb").await?);
    let room = sender.create_room(json!({"preset": "public_chat"})).await?;
    receiver.join(&room).await?;

    let loaders = target.register_many("l", load_senders).await?;
    let load_rooms: Vec<String> = futures::stream::iter(&loaders)
        .map(|client| client.create_room(json!({})))
        .buffered(target.setup_concurrency)
        .try_collect()
        .await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load_sent = Arc::new(AtomicU64::new(0));
    let load_tasks: Vec<_> = loaders
        .into_iter()
        .zip(load_rooms)
        .map(|(client, room)| {
            let (stop, load_sent) = (stop.clone(), load_sent.clone());
            tokio::spawn(async move {
                let mut errors = Errors::default();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    match client.send_text(&room, &format!("l{n}"), &format!("load {n}")).await {
                        Ok(_) => _ = load_sent.fetch_add(1, Ordering::Relaxed),
                        Err(error) => errors.record(&error),
                    }
                    n += 1;
                }
                errors
            })
        })
        .collect();

    let mut since = receiver.sync(None, 0).await?.0;
    let mut latencies = stats::histogram();
    let mut errors = Errors::default();
    let mut warmup_errors = Errors::default();
    let mut measured_from = (Instant::now(), 0);
    for n in 0..warmup + samples {
        if n == warmup {
            measured_from = (Instant::now(), load_sent.load(Ordering::Relaxed));
        }
        let outcome = tokio::time::timeout(SAMPLE_TIMEOUT, sample(&sender, &receiver, &room, &since, n)).await;
        match outcome.unwrap_or_else(|_| Err(anyhow::anyhow!("ping {n} did not arrive within {SAMPLE_TIMEOUT:?}"))) {
            Ok((next, latency)) => {
                if n >= warmup {
                    stats::record(&mut latencies, latency);
                }
                since = next;
            }
            Err(error) => {
                (if n >= warmup { &mut errors } else { &mut warmup_errors }).record(&error);
                // Skip past whatever was missed.
                since = receiver.sync(Some(&since), 0).await.context("resyncing after a failed sample")?.0;
            }
        }
    }
    let load_seconds = measured_from.0.elapsed().as_secs_f64();
    let load_messages = load_sent.load(Ordering::Relaxed) - measured_from.1;
    stop.store(true, Ordering::Relaxed);
    let mut load_errors = Errors::default();
    for task in load_tasks {
        load_errors.merge(task.await.context("load task panicked")?);
    }

    let case = match load_senders {
        0 => "send-to-sync latency: idle".to_owned(),
        n => format!("send-to-sync latency: under {n} senders in {n} rooms"),
    };
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let mut result = json!({
        "scenario": "sync_latency",
        "case": case,
        "figures": [
            stats::figure("p50 ms", ms(0.50), false),
            stats::figure("p99 ms", ms(0.99), false),
            stats::figure("p999 ms", ms(0.999), false),
        ],
        "samples": samples,
        "warmup": warmup,
        "load_senders": load_senders,
        "load_messages_per_second": if load_senders > 0 { load_messages as f64 / load_seconds } else { 0.0 },
        "wakeup_latency_ms": stats::percentiles(&latencies),
    });
    errors.report_into(&mut result, "");
    warmup_errors.report_into(&mut result, "warmup_");
    load_errors.report_into(&mut result, "load_");
    Ok(result)
}

/// Aborts the long poll when a sample is abandoned.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn sample(
    sender: &Client,
    receiver: &Arc<Client>,
    room: &str,
    since: &str,
    n: usize,
) -> Result<(String, Duration)> {
    let body = format!("ping {n}");
    let poll = {
        let (receiver, since, body) = (receiver.clone(), since.to_owned(), body.clone());
        tokio::spawn(async move { receiver.sync_until_body(&since, &body).await })
    };
    let _abort = AbortOnDrop(poll.abort_handle());
    // Let the long poll reach the server before the event exists.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = Instant::now();
    sender.send_text(room, &format!("p{n}"), &body).await?;
    let (next, arrived) = poll.await.context("long poll task")??;
    Ok((next, arrived.saturating_duration_since(sent)))
}
