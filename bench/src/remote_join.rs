//! Remote join: the load generator, as a remote homeserver, holds a public
//! room of `members` of its own users; a target user joins it through the
//! fake (`POST /join/{roomId}?server_name=…`). Figures: the `/join`
//! request's duration, and the time from sending it to the room appearing
//! in the joiner's `/sync`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::Target;
use crate::fake::FakeServer;
use crate::ingest::FILTER;
use crate::stats;

const DEADLINE: Duration = Duration::from_secs(3600);

pub async fn run(target: &Target, tls_dir: &Path, federation_url: &str, members: usize) -> Result<Value> {
    let user = target.register("rj").await?;
    let target_name = user.user_id.split_once(':').context("user id without a server name")?.1;
    let fake = FakeServer::start(tls_dir, federation_url, target_name).await?;

    // Unmeasured: a join into a small room first, so the target already
    // holds the fake's keys and connections.
    let warmup = fake.create_room(1)?;
    user.join_via(&warmup, &fake.name).await.context("joining the warm-up room")?;

    let room = fake.create_room(members)?;
    let since = user.sync_filtered(None, 0, Some(FILTER)).await?.body["next_batch"].as_str().unwrap_or("").to_owned();
    let started = Instant::now();
    user.join_via(&room, &fake.name).await.context("joining the fake server's room")?;
    let join_seconds = started.elapsed().as_secs_f64();
    let in_sync = user
        .sync_until(&since, FILTER, started + DEADLINE, |reply| reply["rooms"]["join"].get(&room).is_some())
        .await?;
    let sync_seconds = in_sync.saturating_duration_since(started).as_secs_f64();
    // Not measured: whether the target took in the whole membership.
    let joined_members = user.joined_member_count(&room).await?;

    Ok(json!({
        "scenario": "remote_join",
        "case": format!("remote join: a room of {members} members on another server"),
        "figures": [
            stats::figure("/join s", join_seconds, false),
            stats::figure("until in /sync s", sync_seconds, false),
        ],
        "members": members,
        "joined_members_seen": joined_members,
        "errors": if joined_members == members + 2 { 0 } else { 1 },
        "error_samples": if joined_members == members + 2 { vec![] } else {
            vec![format!("joined_members lists {joined_members}, expected {}", members + 2)]
        },
    }))
}
