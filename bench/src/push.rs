//! Push throughput: one room of `members` local members, each with one http
//! pusher at a sink this process serves on loopback; one member sends
//! `events` messages. Every other member's default rules notify them of
//! every message, so the sink must receive `events × (members − 1)`
//! notifications. The clock runs from the first send until the last of them
//! arrives: messages through rule evaluation and delivery per second, and
//! notifications delivered per second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

use crate::Target;
use crate::stats::{self, Errors};

const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";
/// Pushes that stop arriving for this long end the run as a failure.
const STALL: Duration = Duration::from_secs(60);
/// How long the warm-up's first push may take: a server still working
/// through the setup's joins (a thousand members, each join pushed to
/// everyone already in) pushes nothing new until it has caught up.
const WARM_UP_STALL: Duration = Duration::from_secs(600);

/// Counts the notifications a push gateway would receive.
#[derive(Default)]
struct Sink {
    received: AtomicU64,
}

impl Sink {
    fn count(&self) -> u64 {
        self.received.load(Ordering::SeqCst)
    }

    /// Until at least `goal` arrived, or none arrived for `stall`; whether it got there.
    async fn wait_for(&self, goal: u64, stall: Duration) -> bool {
        let mut last = (self.count(), Instant::now());
        while self.count() < goal {
            let now = self.count();
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > stall {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }
}

async fn notify(axum::extract::State(sink): axum::extract::State<Arc<Sink>>) -> axum::Json<Value> {
    sink.received.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({"rejected": []}))
}

/// Serves the sink on 127.0.0.1:`port` (any free port for 0); its notify URL.
async fn serve(sink: Arc<Sink>, port: u16) -> Result<String> {
    let router = axum::Router::new().route(NOTIFY_PATH, axum::routing::post(notify)).with_state(sink);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let url = format!("http://{}{NOTIFY_PATH}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

pub async fn run(target: &Target, members: usize, events: usize, gateway_port: u16) -> Result<Value> {
    anyhow::ensure!(members >= 2 && events > 0, "at least two members and one event");
    let sink = Arc::new(Sink::default());
    let url = serve(sink.clone(), gateway_port).await?;
    let recipients = (members - 1) as u64;

    let setup = Instant::now();
    let sender = target.register("p").await?;
    let others = target.register_many("pm", members - 1).await?;
    let room_id = sender.create_room(json!({"preset": "public_chat"})).await?;
    futures::stream::iter(others.iter().enumerate())
        .map(|(n, member)| {
            let (room_id, url) = (&room_id, &url);
            async move {
                member.join(room_id).await?;
                member.set_http_pusher(&format!("pushkey{n}"), url).await
            }
        })
        .buffer_unordered(target.setup_concurrency)
        .try_collect::<()>()
        .await?;
    let setup_seconds = setup.elapsed().as_secs_f64();

    // One unmeasured message: every pusher is live and the pipeline warm.
    sender.send_text(&room_id, "push-warmup", "warm-up").await?;
    if !sink.wait_for(recipients, WARM_UP_STALL).await {
        bail!("the warm-up reached {} of {recipients} pushers", sink.count());
    }
    // Late extra pushes (there should be none) would only inflate the baseline.
    let baseline = sink.count();

    let mut errors = Errors::default();
    let mut sent = 0u64;
    let started = Instant::now();
    for n in 0..events {
        match sender.send_text(&room_id, &format!("push-{n}"), &format!("push {n}")).await {
            Ok(_) => sent += 1,
            Err(error) => errors.record(&error),
        }
    }
    let sent_seconds = started.elapsed().as_secs_f64();
    let goal = baseline + sent * recipients;
    let complete = sink.wait_for(goal, STALL).await;
    let seconds = started.elapsed().as_secs_f64();
    let delivered = sink.count() - baseline;
    if !complete {
        errors.note(format!("{delivered} of {} notifications arrived", sent * recipients));
    }

    let events_per_second = sent as f64 / seconds;
    let notifications_per_second = delivered as f64 / seconds;
    let mut result = json!({
        "scenario": "push",
        "case": format!("push: 1 room x {members} members, one pusher each"),
        "figures": [
            stats::figure("events/s pushed", events_per_second, true),
            stats::figure("notifications/s", notifications_per_second, true),
        ],
        "members": members,
        "events": events,
        "setup_seconds": setup_seconds,
        "send_seconds": sent_seconds,
        "sent_per_second": sent as f64 / sent_seconds,
        "seconds": seconds,
        "notifications_expected": sent * recipients,
        "notifications_delivered": delivered,
        "events_per_second": events_per_second,
        "notifications_per_second": notifications_per_second,
    });
    errors.report_into(&mut result, "");
    Ok(result)
}
