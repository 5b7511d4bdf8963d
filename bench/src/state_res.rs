//! State resolution at scale: the load generator, as a remote homeserver,
//! holds a public room of `members` of its own users, which a target user
//! joins. It then sends two forks off the room's newest event, each with
//! `conflicts` member events of the same members (so every one conflicts
//! with its twin on the other fork), and finally one message on top of
//! both forks: the target must resolve the two forks' states to take it in.
//! The forks are sent and awaited before the clock starts. Figures: the
//! merging transaction's round trip, and the time from sending it to the
//! message appearing in the target user's `/sync`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::Target;
use crate::fake::FakeServer;
use crate::ingest::{FILTER, has_event};
use crate::stats;

/// How long setting up (joining, sending the forks) and the merge may each take.
const DEADLINE: Duration = Duration::from_secs(1800);

pub async fn run(
    target: &Target,
    tls_dir: &Path,
    federation_url: &str,
    members: usize,
    conflicts: usize,
) -> Result<Value> {
    ensure!(conflicts <= members, "each conflicting change is a different member's: at most {members}");
    let user = target.register("sr").await?;
    let target_name = user.user_id.split_once(':').context("user id without a server name")?.1;
    let fake = FakeServer::start(tls_dir, federation_url, target_name).await?;
    let room = fake.create_room(members)?;
    user.join_via(&room, &fake.name).await.context("joining the fake server's room")?;

    let forks = fake.conflicting_forks(&room, conflicts)?;
    let mut since =
        user.sync_filtered(None, 0, Some(FILTER)).await?.body["next_batch"].as_str().unwrap_or("").to_owned();
    for (fork, tip) in forks.forks.iter().zip(&forks.tips) {
        for chunk in fork.chunks(50) {
            let rejected = fake.send_transaction(chunk).await?;
            ensure!(rejected.is_empty(), "fork PDUs rejected: {rejected:?}");
        }
        // Awaited fork by fork: a later sync shows only the newest events.
        user.sync_until(&since, FILTER, Instant::now() + DEADLINE, |reply| has_event(reply, &room, tip))
            .await
            .context("waiting for a fork")?;
        since = user.sync_filtered(None, 0, Some(FILTER)).await?.body["next_batch"].as_str().unwrap_or("").to_owned();
    }

    let merge_id = forks.merge_id.clone();
    let started = Instant::now();
    let rejected = fake.send_transaction(std::slice::from_ref(&forks.merge)).await?;
    let answered = started.elapsed().as_secs_f64();
    ensure!(rejected.is_empty(), "the merging message was rejected: {rejected:?}");
    let visible = user
        .sync_until(&since, FILTER, started + DEADLINE, |reply| has_event(reply, &room, &merge_id))
        .await?
        .saturating_duration_since(started)
        .as_secs_f64();

    Ok(json!({
        "scenario": "state_resolution",
        "case": format!("state resolution: two forks of {conflicts} member changes each in a room of {members} remote members"),
        "figures": [
            stats::figure("merge transaction s", answered, false),
            stats::figure("until in /sync s", visible, false),
        ],
        "members": members,
        "conflicts_per_fork": conflicts,
        "seconds_transaction": answered,
        "seconds_until_visible": visible,
    }))
}
