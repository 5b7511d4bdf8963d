//! Push gateway delivery: <https://spec.matrix.org/v1.16/push-gateway-api/>.
//!
//! The outbox is the queue. One task sends the oldest due row of each
//! pusher (so each pusher's notifications stay in order), all pushers at
//! once; a row is deleted after a 2xx, retried with exponential backoff on
//! the bus clock after anything else, and dropped once it is older than
//! `pusher.give_up_after_secs`. Pushkeys a gateway reports as `rejected`
//! lose their pusher. Requests go only to addresses the policy permits
//! (`resolver.rs`), follow no redirects and use no proxy, so the address
//! checked is the address connected to.

mod resolver;

use std::sync::Arc;
use std::time::Duration;

use myelin_bus::{BusError, Shutdown};
use myelin_types::clock::SharedClock;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub use resolver::GatewayResolver;

use crate::PusherError;
use crate::metrics;
use crate::storage::{OutboxRow, Storage};

/// The first retry's delay; each further one doubles it, up to [`MAX_BACKOFF_MS`].
const FIRST_BACKOFF_MS: i64 = 1_000;
const MAX_BACKOFF_MS: i64 = 3_600_000;
/// Gateway requests in flight at once, at most; the rest wait for the next round.
const MAX_IN_FLIGHT: i64 = 64;
/// How often due retries are looked for when nothing new arrives.
const POLL: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
enum SendError {
    /// Retrying cannot help: the URL points where pushes may not go, or the
    /// gateway refused the request itself (a 4xx other than 429).
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    Transient(String),
}

/// The gateway's answer to a notification.
#[derive(Deserialize)]
struct NotifyReply {
    #[serde(default)]
    rejected: Vec<String>,
}

pub struct Delivery {
    storage: Arc<Storage>,
    http: reqwest::Client,
    policy: GatewayResolver,
    clock: SharedClock,
    give_up_ms: i64,
    /// How long a claimed row stays claimed: past it, another instance (or
    /// this one after a crash) may send it again. Twice the request timeout,
    /// so that an attempt ends, and is recorded, well before its lease does.
    lease_ms: i64,
    wake: Notify,
}

impl Delivery {
    pub fn new(storage: Arc<Storage>, clock: SharedClock, config: &myelin_config::Pusher) -> Result<Self, PusherError> {
        let policy = GatewayResolver { allow_private: config.allow_private_gateways };
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(policy))
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(config.gateway_timeout_secs))
            .build()
            .map_err(|e| PusherError::Http(e.to_string()))?;
        let give_up_ms = i64::try_from(config.give_up_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
        let lease_ms = i64::try_from(config.gateway_timeout_secs.saturating_mul(2000)).unwrap_or(i64::MAX);
        Ok(Self { storage, http, policy, clock, give_up_ms, lease_ms, wake: Notify::new() })
    }

    /// Something new is in the outbox.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn spawn(self: Arc<Self>, mut shutdown: Shutdown) -> JoinHandle<Result<(), BusError>> {
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                if let Err(error) = self.clone().round().await {
                    tracing::warn!(%error, "push delivery round failed");
                }
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.wait() => {}
                }
            }
            Ok(())
        })
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms() as i64
    }

    /// Send every pusher's oldest due row (up to [`MAX_IN_FLIGHT`]), concurrently.
    async fn round(self: Arc<Self>) -> Result<(), PusherError> {
        let now = self.now_ms();
        let mut attempts = JoinSet::new();
        let due = self.storage.due_deliveries(now, MAX_IN_FLIGHT).await?;
        let more = due.len() as i64 == MAX_IN_FLIGHT;
        // A failed claim stops claiming but must not abandon the attempts
        // already under way: dropping the set would abort them and leave
        // their rows claimed for a whole lease.
        let mut claim_failed = None;
        for row in due {
            match self.storage.claim_delivery(&row, now.saturating_add(self.lease_ms)).await {
                Ok(true) => {
                    attempts.spawn(self.clone().attempt(row));
                }
                Ok(false) => {}
                Err(error) => {
                    claim_failed = Some(error);
                    break;
                }
            }
        }
        while let Some(done) = attempts.join_next().await {
            match done {
                Ok(Err(error)) => tracing::warn!(%error, "recording a push delivery failed"),
                Err(error) => tracing::error!(%error, "push delivery task failed"),
                Ok(Ok(())) => {}
            }
        }
        if let Some(error) = claim_failed {
            return Err(error);
        }
        // A full round may have left due rows behind: go again at once.
        if more {
            self.wake();
        }
        Ok(())
    }

    async fn attempt(self: Arc<Self>, row: OutboxRow) -> Result<(), PusherError> {
        if !self.storage.pusher_exists(&row.user_id, &row.app_id, &row.pushkey).await? {
            metrics::delivery("dropped");
            return self.storage.delete_delivery(row.id).await;
        }
        match self.send(&row).await {
            Ok(rejected) => {
                if rejected.contains(&row.pushkey) {
                    tracing::info!(app_id = %row.app_id, "push gateway rejected a pushkey; removing its pusher");
                    metrics::rejected();
                    self.storage.delete_rejected_pusher(&row.user_id, &row.app_id, &row.pushkey).await?;
                }
                metrics::delivery("delivered");
                self.storage.delete_delivery(row.id).await
            }
            Err(SendError::Permanent(reason)) => {
                tracing::warn!(%reason, app_id = %row.app_id, "dropping a push notification");
                metrics::delivery("dropped");
                self.storage.delete_delivery(row.id).await
            }
            Err(SendError::Transient(reason)) => {
                let now = self.now_ms();
                if now.saturating_sub(row.created_ms) >= self.give_up_ms {
                    tracing::warn!(%reason, app_id = %row.app_id, "giving up on a push notification");
                    metrics::delivery("gave_up");
                    return self.storage.delete_delivery(row.id).await;
                }
                tracing::debug!(%reason, app_id = %row.app_id, "push notification will be retried");
                metrics::delivery("retried");
                let backoff = FIRST_BACKOFF_MS.saturating_mul(1 << row.attempts.clamp(0, 20)).min(MAX_BACKOFF_MS);
                self.storage.retry_delivery(row.id, now + backoff).await
            }
        }
    }

    /// POST the stored body; the pushkeys the gateway rejected.
    async fn send(&self, row: &OutboxRow) -> Result<Vec<String>, SendError> {
        let url = url::Url::parse(&row.url).map_err(|e| SendError::Permanent(format!("bad gateway URL: {e}")))?;
        // Literal addresses never reach the resolver.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.policy.permits(ip)
        {
            return Err(SendError::Permanent(format!("gateway address {ip} is not allowed")));
        }
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(row.body.clone())
            .send()
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            // A 2xx without a readable body still delivered the notification.
            let reply = response.json::<NotifyReply>().await.map(|r| r.rejected).unwrap_or_default();
            return Ok(reply);
        }
        if status.is_client_error() && status != reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(SendError::Permanent(format!("gateway answered {status}")));
        }
        Err(SendError::Transient(format!("gateway answered {status}")))
    }
}
