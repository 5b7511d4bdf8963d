//! Presence: set and read with `/presence/{userId}/status`, set by syncing
//! (`set_presence`), and sent in `/sync` to those who share a room.

use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_clientapi::api::{Identity, PRESENCE_TOPIC, PresenceUpdate};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::SyncApiError;
use crate::storage::Presence;
use crate::token::Stream;

/// The states a user may be in.
const PRESENCE_STATES: &[&str] = &["online", "unavailable", "offline"];

/// Online users count as currently active this long after their last activity.
const CURRENTLY_ACTIVE_MS: i64 = 60_000;

fn check_state(presence: &str) -> Result<(), MatrixError> {
    if PRESENCE_STATES.contains(&presence) {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(format!("Unknown presence {presence:?}")))
    }
}

/// Store `user_id`'s presence, wake those who share a room with them, and
/// publish the change on `edu.presence` for other servers.
pub async fn set(
    state: &AppState,
    user_id: &str,
    presence: &str,
    status_msg: Option<&str>,
    keep_status: bool,
) -> Result<(), SyncApiError> {
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    let concerned = state.storage.users_sharing_a_room(user_id).await?;
    if let Some(pos) = state.storage.put_presence(user_id, presence, status_msg, keep_status, now).await? {
        state.notifier.publish(Stream::Presence, pos, &concerned);
        if let (Some(stored), Ok(user_id)) = (state.storage.presence(user_id).await?, OwnedUserId::try_from(user_id)) {
            let update = PresenceUpdate {
                user_id,
                presence: stored.presence,
                status_msg: stored.status_msg,
                last_active_ts: u64::try_from(stored.last_active_ts).unwrap_or(0),
            };
            state.bus.produce_json(PRESENCE_TOPIC, update.user_id.as_str(), &update).await?;
        }
    }
    Ok(())
}

/// The `m.presence` content of a stored presence, as seen at `now_ms`.
pub fn content(presence: &Presence, now_ms: i64) -> Value {
    let last_active_ago = (now_ms - presence.last_active_ts).max(0);
    let mut content = json!({
        "presence": presence.presence,
        "last_active_ago": last_active_ago,
        "currently_active": presence.presence == "online" && last_active_ago < CURRENTLY_ACTIVE_MS,
    });
    if let Some(status) = &presence.status_msg {
        content["status_msg"] = Value::String(status.clone());
    }
    content
}

/// The `m.presence` event of a stored presence, for `/sync`.
pub fn event(presence: &Presence, now_ms: i64) -> Value {
    json!({ "type": "m.presence", "sender": presence.user_id, "content": content(presence, now_ms) })
}

/// `set_presence` of a `/sync`: `offline` (and no parameter with it) leaves
/// the stored presence alone, as the spec says the client is then not marked online.
pub async fn on_sync(state: &AppState, identity: &Identity, set_presence: Option<&str>) -> Result<(), SyncApiError> {
    let presence = set_presence.unwrap_or("online");
    check_state(presence)?;
    if presence == "offline" {
        return Ok(());
    }
    // Every sync passes here: write only when the state changes or the last
    // activity would soon stop counting as current.
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    let stored = state.storage.presence(identity.user_id.as_str()).await?;
    if stored.is_some_and(|p| p.presence == presence && now - p.last_active_ts < CURRENTLY_ACTIVE_MS / 2) {
        return Ok(());
    }
    set(state, identity.user_id.as_str(), presence, None, true).await
}

#[derive(Deserialize)]
struct PresenceBody {
    presence: String,
    status_msg: Option<String>,
}

/// PUT /_matrix/client/v3/presence/{userId}/status
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3presenceuseridstatus>
pub async fn put_status(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, body) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    if identity.user_id.as_str() != user_id {
        return Err(MatrixError::forbidden("Cannot set the presence of another user").into());
    }
    let body: PresenceBody = super::json_body(body).await?;
    check_state(&body.presence)?;
    set(&state, &user_id, &body.presence, body.status_msg.as_deref(), false).await?;
    Ok(Json(json!({})))
}

/// GET /_matrix/client/v3/presence/{userId}/status
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3presenceuseridstatus>
///
/// Only for oneself and those one shares a room with; someone who never set
/// a presence is `offline`.
pub async fn get_status(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let me = identity.user_id.as_str();
    if me != user_id && !state.storage.share_a_room(me, &user_id).await? {
        return Err(MatrixError::forbidden("You do not share a room with this user").into());
    }
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    Ok(Json(match state.storage.presence(&user_id).await? {
        Some(presence) => content(&presence, now),
        None => json!({ "presence": "offline" }),
    }))
}
