//! Load generator: drives any homeserver by URL, registering its users
//! through Synapse's shared-secret admin API, so the same scenario runs
//! against Myelin and Synapse. Prints one JSON object per scenario.
//!
//! Every scenario sets up its users and rooms first, then runs a warm-up
//! that is not measured, and only then starts its clock. Failed requests
//! during the measurement are counted and reported, never dropped.

mod client;
mod fake;
mod history;
mod ingest;
mod initial_sync;
mod latency;
mod push;
mod remote_join;
mod send;
mod state_res;
mod stats;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand};
use client::Client;
use futures::{StreamExt, TryStreamExt};
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
    /// Requests in flight at once while setting up (registrations, joins, history).
    #[arg(long, default_value_t = 8)]
    setup_concurrency: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Messages per second: each sender sends into its own room, or all into one.
    Send {
        #[arg(long, default_value_t = 1)]
        senders: usize,
        /// Messages per sender (measured).
        #[arg(long, default_value_t = 500)]
        messages: usize,
        #[arg(long)]
        shared_room: bool,
        /// Unmeasured messages per sender before the clock starts.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
    },
    /// Time from a send request to the receiver's long-polling /sync returning
    /// the event, optionally while other senders load the server.
    SyncLatency {
        #[arg(long, default_value_t = 200)]
        samples: usize,
        /// Unmeasured samples first (the load is already running during them).
        #[arg(long, default_value_t = 10)]
        warmup: usize,
        /// Senders that send continuously, each into its own room, during the samples.
        #[arg(long, default_value_t = 0)]
        load_senders: usize,
    },
    /// Initial /sync (lazy-loaded members) of a user in `rooms` rooms of `members` members each.
    InitialSync {
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 100)]
        members: usize,
        /// Measured initial syncs, after one unmeasured one.
        #[arg(long, default_value_t = 5)]
        samples: usize,
    },
    /// /messages backwards through a room of `events` messages.
    Messages {
        #[arg(long, default_value_t = 2000)]
        events: usize,
        /// Events per page (`limit`).
        #[arg(long, default_value_t = 100)]
        page: usize,
    },
    /// Pushes: one room of `members` members, each with an http pusher at a
    /// sink on 127.0.0.1:`gateway_port` that this process serves; one sends
    /// `events` messages, timed until every notification reached the sink.
    /// The server must allow push gateways on loopback.
    Push {
        #[arg(long, default_value_t = 1000)]
        members: usize,
        #[arg(long, default_value_t = 100)]
        events: usize,
        /// 0: any free port.
        #[arg(long, default_value_t = 0)]
        gateway_port: u16,
    },
    /// Federation ingest: as a remote server, has a target user join its
    /// room, then sends `events` messages in transactions of at most
    /// `per_transaction` PDUs; timed until the last one is in the user's /sync.
    /// The target must trust `tls_dir`'s CA and federate over loopback.
    FederationIngest {
        #[command(flatten)]
        federation: FederationArgs,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        /// At most 50 (the spec's limit).
        #[arg(long, default_value_t = 50)]
        per_transaction: usize,
        /// Unmeasured events sent (and awaited) first.
        #[arg(long, default_value_t = 50)]
        warmup: usize,
    },
    /// Remote join: a target user joins a room of `members` users that only
    /// the load generator, as a remote server, is in.
    RemoteJoin {
        #[command(flatten)]
        federation: FederationArgs,
        #[arg(long, default_value_t = 10_000)]
        members: usize,
    },
    /// State resolution at scale: in a room of `members` users on the load
    /// generator's fake server, which a target user joined, two forks of
    /// `conflicts` member changes each, then one message on top of both.
    StateResolution {
        #[command(flatten)]
        federation: FederationArgs,
        #[arg(long, default_value_t = 10_000)]
        members: usize,
        /// Conflicting member changes per fork (at most `members`).
        #[arg(long, default_value_t = 1_000)]
        conflicts: usize,
    },
    /// Writes the fake remote server's certificates into `dir`: `ca.pem`
    /// (for the target to trust), `tls.crt` and `tls.key`.
    FederationPki {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// How the federation scenarios reach the target and serve their fake server.
#[derive(clap::Args)]
struct FederationArgs {
    /// Base URL of the target's federation API (`https://…` or `http://…`).
    #[arg(long)]
    federation_url: String,
    /// Where `federation-pki` wrote the fake server's certificate.
    #[arg(long)]
    tls_dir: PathBuf,
}

/// The server under test and this run's unique user names.
pub struct Target {
    http: reqwest::Client,
    url: String,
    secret: String,
    run_id: String,
    setup_concurrency: usize,
}

impl Target {
    pub async fn register(&self, tag: &str) -> Result<Client> {
        Client::register(&self.http, &self.url, &self.secret, &format!("b{}{tag}", self.run_id)).await
    }

    /// Registers `count` users, `setup_concurrency` at a time.
    pub async fn register_many(&self, tag: &str, count: usize) -> Result<Vec<Arc<Client>>> {
        futures::stream::iter(0..count)
            .map(|n| async move { self.register(&format!("{tag}{n}")).await.map(Arc::new) })
            .buffered(self.setup_concurrency.max(1))
            .try_collect()
            .await
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        // Long polls last 30 s; anything much longer is a failure, not a sample.
        .timeout(Duration::from_secs(120))
        .build()?;
    let target = Target {
        http,
        url: cli.url.trim_end_matches('/').to_owned(),
        secret: cli.shared_secret,
        run_id: format!("{}{}", now_ms() % 1_000_000_000, std::process::id()),
        setup_concurrency: cli.setup_concurrency.max(1),
    };
    let mut result = match cli.scenario {
        Scenario::Send { senders, messages, shared_room, warmup } => {
            send::run(&target, senders, messages, shared_room, warmup).await?
        }
        Scenario::SyncLatency { samples, warmup, load_senders } => {
            latency::run(&target, samples, warmup, load_senders).await?
        }
        Scenario::InitialSync { rooms, members, samples } => {
            initial_sync::run(&target, rooms, members, samples).await?
        }
        Scenario::Messages { events, page } => history::run(&target, events, page).await?,
        Scenario::Push { members, events, gateway_port } => push::run(&target, members, events, gateway_port).await?,
        Scenario::FederationIngest { federation, events, per_transaction, warmup } => {
            let FederationArgs { federation_url, tls_dir } = federation;
            ingest::run(&target, &tls_dir, &federation_url, events, per_transaction, warmup).await?
        }
        Scenario::RemoteJoin { federation, members } => {
            remote_join::run(&target, &federation.tls_dir, &federation.federation_url, members).await?
        }
        Scenario::StateResolution { federation, members, conflicts } => {
            state_res::run(&target, &federation.tls_dir, &federation.federation_url, members, conflicts).await?
        }
        Scenario::FederationPki { dir } => {
            fake::write_pki(&dir)?;
            return Ok(());
        }
    };
    result["label"] = json!(cli.label);
    println!("{result}");
    Ok(())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}
