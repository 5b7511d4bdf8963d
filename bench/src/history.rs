//! `/messages` pagination: back through a room of `events` messages,
//! `page` events per request, from the newest event to the room's creation.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::Target;
use crate::client::Client;
use crate::stats::{self, Errors};

/// Attempts per page before the pass gives up.
const ATTEMPTS: usize = 3;

pub async fn run(target: &Target, events: usize, page: usize) -> Result<Value> {
    let user = target.register("h").await?;
    let room = user.create_room(json!({})).await?;
    futures::stream::iter(0..events)
        .map(|n| {
            let (user, room) = (&user, &room);
            async move { user.send_text(room, &format!("h{n}"), &format!("history {n}")).await }
        })
        .buffer_unordered(target.setup_concurrency)
        .try_collect::<Vec<_>>()
        .await?;

    // Unmeasured passes until the whole history is visible (the warm-up).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pass = paginate(&user, &room, page, events).await?;
        if pass.history >= events {
            break;
        }
        if Instant::now() > deadline {
            bail!("/messages shows {} of {events} messages", pass.history);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let started = Instant::now();
    let pass = paginate(&user, &room, page, events).await?;
    let seconds = started.elapsed().as_secs_f64();
    let rate = pass.events as f64 / seconds;
    let mut result = json!({
        "scenario": "messages",
        "case": format!("/messages: back through {events} events, {page} per page"),
        "figures": [
            stats::figure("events/s", rate, true),
            stats::figure("page p50 ms", pass.latencies.value_at_quantile(0.5) as f64 / 1000.0, false),
            stats::figure("page p99 ms", pass.latencies.value_at_quantile(0.99) as f64 / 1000.0, false),
        ],
        "events": events,
        "page": page,
        "events_returned": pass.events,
        "messages_returned": pass.history,
        "pages": pass.pages,
        "seconds": seconds,
        "events_per_second": rate,
        "page_latency_ms": stats::percentiles(&pass.latencies),
    });
    let mut errors = pass.errors;
    if pass.history != events {
        errors.note(format!("{} of {events} messages returned", pass.history));
    }
    errors.report_into(&mut result, "");
    Ok(result)
}

struct Pass {
    events: usize,
    history: usize,
    pages: usize,
    latencies: Histogram<u64>,
    errors: Errors,
}

async fn paginate(user: &Client, room: &str, page: usize, events: usize) -> Result<Pass> {
    let mut pass = Pass { events: 0, history: 0, pages: 0, latencies: stats::histogram(), errors: Errors::default() };
    let mut from: Option<String> = None;
    // Bounded, in case a server hands back the same token forever.
    let max_pages = events / page.max(1) + 100;
    while pass.pages < max_pages {
        let mut attempt = 0;
        let reply = loop {
            let started = Instant::now();
            match user.messages_back(room, from.as_deref(), page).await {
                Ok(reply) => {
                    stats::record(&mut pass.latencies, started.elapsed());
                    break reply;
                }
                Err(error) if attempt + 1 < ATTEMPTS => pass.errors.record(&error),
                Err(error) => return Err(error.context(format!("/messages failed {ATTEMPTS} times"))),
            }
            attempt += 1;
        };
        pass.pages += 1;
        let chunk = reply["chunk"].as_array().map(Vec::as_slice).unwrap_or_default();
        pass.events += chunk.len();
        pass.history += chunk
            .iter()
            .filter(|e| e["content"]["body"].as_str().is_some_and(|body| body.starts_with("history ")))
            .count();
        match reply["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    Ok(pass)
}
