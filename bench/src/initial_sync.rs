//! Initial `/sync` of a user in `rooms` rooms of `members` members each,
//! with lazy-loaded members (as Element and other clients request it).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::Target;
use crate::client::Client;
use crate::stats::{self, Errors};

const FILTER: &str = r#"{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":10}}}"#;

pub async fn run(target: &Target, rooms: usize, members: usize, samples: usize) -> Result<Value> {
    anyhow::ensure!(rooms > 0 && members > 0, "at least one room and one member");
    let setup = Instant::now();
    let subject = target.register("i").await?;
    let others = target.register_many("im", members - 1).await?;
    let room_ids: Vec<String> = futures::stream::iter(0..rooms)
        .map(|_| subject.create_room(json!({"preset": "public_chat"})))
        .buffered(target.setup_concurrency)
        .try_collect()
        .await?;
    // Member by member, so every room grows at the same pace.
    let joins = others.iter().flat_map(|member| room_ids.iter().map(move |room| (member, room)));
    futures::stream::iter(joins)
        .map(|(member, room)| member.join(room))
        .buffer_unordered(target.setup_concurrency)
        .try_collect::<()>()
        .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    // Wait until every room shows up, then one unmeasured initial sync.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let started = Instant::now();
        let reply = subject.sync_filtered(None, 0, Some(FILTER)).await?;
        let elapsed = started.elapsed();
        if joined_rooms(&reply.body) == rooms {
            break elapsed;
        }
        if Instant::now() > deadline {
            bail!("initial sync shows {} of {rooms} rooms", joined_rooms(&reply.body));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let mut latencies = stats::histogram();
    let mut errors = Errors::default();
    let mut shape = json!(null);
    for _ in 0..samples {
        let started = Instant::now();
        match one(&subject, rooms).await {
            Ok(reply_shape) => {
                stats::record(&mut latencies, started.elapsed());
                shape = reply_shape;
            }
            Err(error) => errors.record(&error),
        }
    }

    let mut result = json!({
        "scenario": "initial_sync",
        "case": format!("initial /sync: {rooms} rooms x {members} members, lazy-loaded"),
        "figures": [stats::figure("p50 ms", latencies.value_at_quantile(0.5) as f64 / 1000.0, false)],
        "rooms": rooms,
        "members": members,
        "samples": samples,
        "filter": FILTER,
        "setup_seconds": setup_seconds,
        "first_sync_ms": first.as_secs_f64() * 1000.0,
        "latency_ms": stats::percentiles(&latencies),
        "response": shape,
    });
    errors.report_into(&mut result, "");
    Ok(result)
}

fn joined_rooms(body: &Value) -> usize {
    body["rooms"]["join"].as_object().map_or(0, |rooms| rooms.len())
}

/// One measured initial sync; returns the size of what came back.
async fn one(subject: &Client, rooms: usize) -> Result<Value> {
    let reply = subject.sync_filtered(None, 0, Some(FILTER)).await?;
    let joined = reply.body["rooms"]["join"].as_object().context("no rooms.join")?;
    if joined.len() != rooms {
        bail!("initial sync returned {} of {rooms} rooms", joined.len());
    }
    let count = |section: &str| -> usize {
        joined.values().map(|room| room[section]["events"].as_array().map_or(0, Vec::len)).sum()
    };
    Ok(json!({"bytes": reply.bytes, "state_events": count("state"), "timeline_events": count("timeline")}))
}
