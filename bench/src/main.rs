//! Load generator: drives any homeserver by URL, registering its users
//! through Synapse's shared-secret admin API, so the same scenario runs
//! against Myelin and Synapse. Prints one JSON object per scenario.

mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use client::Client;
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Myelin load generator")]
struct Cli {
    /// Base URL of the homeserver's client API.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// The server's registration shared secret.
    #[arg(long, env = "MYELIN_BENCH_SHARED_SECRET")]
    shared_secret: String,
    /// A label for the results (e.g. `myelin-sqlite`).
    #[arg(long, default_value = "target")]
    label: String,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Messages per second: each sender sends into its own room, or all into one.
    Send {
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Messages per sender.
        #[arg(long, default_value_t = 500)]
        messages: usize,
        #[arg(long)]
        shared_room: bool,
    },
    /// Time from a send request to the receiver's long-polling /sync returning the event.
    SyncLatency {
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let run_id = format!("{}{}", now_ms() % 1_000_000_000, std::process::id());
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let result = match cli.scenario {
        Scenario::Send { senders, messages, shared_room } => {
            send(&http, &cli.url, &cli.shared_secret, &run_id, senders, messages, shared_room).await?
        }
        Scenario::SyncLatency { samples } => {
            sync_latency(&http, &cli.url, &cli.shared_secret, &run_id, samples).await?
        }
    };
    let mut result = result;
    result["label"] = json!(cli.label);
    println!("{result}");
    Ok(())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

async fn send(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    run_id: &str,
    senders: usize,
    messages: usize,
    shared_room: bool,
) -> Result<serde_json::Value> {
    let mut clients = Vec::with_capacity(senders);
    for n in 0..senders {
        clients.push(Client::register(http, url, secret, &format!("send{run_id}s{n}")).await?);
    }
    let mut rooms = Vec::with_capacity(senders);
    if shared_room {
        let room = clients[0].create_room(json!({"preset": "public_chat"})).await?;
        for client in &clients[1..] {
            client.join(&room).await?;
        }
        rooms.resize(senders, room);
    } else {
        for client in &clients {
            rooms.push(client.create_room(json!({})).await?);
        }
    }
    let clients: Vec<Arc<Client>> = clients.into_iter().map(Arc::new).collect();
    let started = Instant::now();
    let tasks = clients.iter().zip(rooms).map(|(client, room)| {
        let client = client.clone();
        tokio::spawn(async move {
            let mut latencies = Histogram::<u64>::new(3).expect("histogram");
            for m in 0..messages {
                let sent = Instant::now();
                client.send_text(&room, &format!("t{m}"), &format!("message {m}")).await?;
                latencies.record(sent.elapsed().as_micros() as u64).ok();
            }
            anyhow::Ok(latencies)
        })
    });
    let mut latencies = Histogram::<u64>::new(3)?;
    for task in futures::future::join_all(tasks).await {
        latencies.add(task.context("sender task")??)?;
    }
    let elapsed = started.elapsed();
    let total = senders * messages;
    Ok(json!({
        "scenario": "send",
        "senders": senders,
        "shared_room": shared_room,
        "messages": total,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_second": total as f64 / elapsed.as_secs_f64(),
        "send_latency_ms": percentiles(&latencies),
    }))
}

async fn sync_latency(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    run_id: &str,
    samples: usize,
) -> Result<serde_json::Value> {
    let sender = Client::register(http, url, secret, &format!("lat{run_id}a")).await?;
    let receiver = Arc::new(Client::register(http, url, secret, &format!("lat{run_id}b")).await?);
    let room = sender.create_room(json!({"preset": "public_chat"})).await?;
    receiver.join(&room).await?;
    let mut since = receiver.sync(None, 0).await?.0;
    let mut latencies = Histogram::<u64>::new(3)?;
    for n in 0..samples {
        let poll = {
            let receiver = receiver.clone();
            let since = since.clone();
            tokio::spawn(async move { receiver.sync_until_body(&since, &format!("ping {n}")).await })
        };
        // Let the long poll reach the server before the event exists.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let sent = Instant::now();
        sender.send_text(&room, &format!("p{n}"), &format!("ping {n}")).await?;
        let (next, arrived) = poll.await??;
        latencies.record(arrived.saturating_duration_since(sent).as_micros() as u64).ok();
        since = next;
    }
    Ok(json!({
        "scenario": "sync_latency",
        "samples": samples,
        "wakeup_latency_ms": percentiles(&latencies),
    }))
}

fn percentiles(histogram: &Histogram<u64>) -> serde_json::Value {
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    json!({"p50": ms(0.50), "p99": ms(0.99), "p999": ms(0.999), "max": histogram.max() as f64 / 1000.0})
}
