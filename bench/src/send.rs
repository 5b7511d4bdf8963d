//! Send throughput: `senders` users each send `messages` messages, one
//! request at a time, into their own room or all into one shared room.

use std::time::Instant;

use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::Target;
use crate::stats::{self, Errors};

pub async fn run(target: &Target, senders: usize, messages: usize, shared_room: bool, warmup: usize) -> Result<Value> {
    anyhow::ensure!(senders > 0, "at least one sender");
    let clients = target.register_many("s", senders).await?;
    let rooms: Vec<String> = if shared_room {
        let room = clients[0].create_room(json!({"preset": "public_chat"})).await?;
        futures::stream::iter(&clients[1..])
            .map(|client| client.join(&room))
            .buffer_unordered(target.setup_concurrency)
            .try_collect::<()>()
            .await?;
        vec![room; senders]
    } else {
        futures::stream::iter(&clients)
            .map(|client| client.create_room(json!({})))
            .buffered(target.setup_concurrency)
            .try_collect()
            .await?
    };

    // Warm-up, unmeasured: every sender sends a few messages at once.
    futures::future::try_join_all(clients.iter().zip(&rooms).map(|(client, room)| async move {
        for n in 0..warmup {
            client.send_text(room, &format!("w{n}"), &format!("warm-up {n}")).await.context("warm-up")?;
        }
        anyhow::Ok(())
    }))
    .await?;

    let started = Instant::now();
    let tasks = clients.iter().zip(rooms).map(|(client, room)| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut latencies = stats::histogram();
            let mut errors = Errors::default();
            for n in 0..messages {
                let sent = Instant::now();
                match client.send_text(&room, &format!("t{n}"), &format!("message {n}")).await {
                    Ok(_) => stats::record(&mut latencies, sent.elapsed()),
                    Err(error) => errors.record(&error),
                }
            }
            (latencies, errors)
        })
    });
    let mut latencies = stats::histogram();
    let mut errors = Errors::default();
    for task in futures::future::join_all(tasks).await {
        let (task_latencies, task_errors) = task.context("sender task panicked")?;
        latencies.add(task_latencies)?;
        errors.merge(task_errors);
    }
    let seconds = started.elapsed().as_secs_f64();
    let sent = latencies.len();
    let rate = sent as f64 / seconds;
    let case = match (senders, shared_room) {
        (1, _) => "send: 1 sender".to_owned(),
        (n, true) => format!("send: {n} senders in 1 room"),
        (n, false) => format!("send: {n} senders in {n} rooms"),
    };
    let mut result = json!({
        "scenario": "send",
        "case": case,
        "figures": [stats::figure("messages/s", rate, true)],
        "senders": senders,
        "shared_room": shared_room,
        "messages_per_sender": messages,
        "warmup_per_sender": warmup,
        "messages_sent": sent,
        "seconds": seconds,
        "messages_per_second": rate,
        "send_latency_ms": stats::percentiles(&latencies),
    });
    errors.report_into(&mut result, "");
    Ok(result)
}
