//! HTTP handlers, mounted under both `/_matrix/client/v3` and the legacy `r0`.

mod filter;
mod keys;
mod members;
mod messages;
pub mod presence;
mod relations;
mod room_events;
mod search;
mod sliding_sync;
mod sync;
mod unsigned;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::Router;
use axum::http::request::Parts;
use axum::routing::{get, post};
use myelin_bus::Bus;
use myelin_clientapi::api::{Identity, TokenResolver};
use myelin_types::MatrixError;
use myelin_types::clock::SharedClock;
use serde_json::{Map, Value};

use crate::SyncApiError;
use crate::connections::Connections;
use crate::lazy_members::SentMembers;
use crate::notifier::Notifier;
use crate::storage::{EventRow, MembershipChange, Storage};
use crate::token::StreamToken;
use crate::typing::Typing;
use crate::visibility::{HistoryVisibility, RoomView};

#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub notifier: Arc<Notifier>,
    pub auth: Arc<TokenResolver>,
    pub typing: Arc<Typing>,
    pub clock: SharedClock,
    /// To ask the room server for older history (`/messages`).
    pub bus: Bus,
    /// Sliding sync connections and what each was sent.
    pub sliding: Arc<Connections<sliding_sync::ConnState>>,
    /// Member events each device got from lazy-loading syncs.
    pub lazy_members: Arc<SentMembers>,
}

pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for prefix in ["/_matrix/client/v3", "/_matrix/client/r0"] {
        router = router
            .route(&format!("{prefix}/sync"), get(sync::sync))
            .route(&format!("{prefix}/user/{{userId}}/filter"), post(filter::create_filter))
            .route(&format!("{prefix}/user/{{userId}}/filter/{{filterId}}"), get(filter::get_filter))
            .route(&format!("{prefix}/rooms/{{roomId}}/messages"), get(messages::messages))
            .route(&format!("{prefix}/rooms/{{roomId}}/members"), get(members::members))
            .route(&format!("{prefix}/rooms/{{roomId}}/event/{{eventId}}"), get(room_events::event))
            .route(&format!("{prefix}/rooms/{{roomId}}/context/{{eventId}}"), get(room_events::context))
            .route(&format!("{prefix}/keys/changes"), get(keys::changes))
            .route(&format!("{prefix}/search"), post(search::search))
            .route(
                &format!("{prefix}/presence/{{userId}}/status"),
                get(presence::get_status).put(presence::put_status),
            );
    }
    let relations = "/_matrix/client/v1/rooms/{roomId}/relations/{eventId}";
    router
        .route(relations, get(relations::relations))
        .route(&format!("{relations}/{{relType}}"), get(relations::relations))
        .route(&format!("{relations}/{{relType}}/{{eventType}}"), get(relations::relations))
        .route("/_matrix/client/v1/rooms/{roomId}/threads", get(relations::threads))
        .route("/_matrix/client/unstable/org.matrix.simplified_msc3575/sync", post(sliding_sync::sliding_sync))
        .with_state(state)
}

/// A JSON request body of shape `T`: `M_NOT_JSON` when it is not JSON,
/// `M_BAD_JSON` when it has the wrong shape.
async fn json_body<T: serde::de::DeserializeOwned>(body: axum::body::Body) -> Result<T, SyncApiError> {
    let bytes = axum::body::to_bytes(body, usize::MAX).await.map_err(|e| MatrixError::bad_json(e.to_string()))?;
    let value: Value = myelin_types::json::parse(&bytes)?;
    Ok(serde_json::from_value(value).map_err(|e| MatrixError::bad_json(e.to_string()))?)
}

/// The query string as a map (the last of repeated names wins).
fn query_params(parts: &Parts) -> HashMap<String, String> {
    parts.uri.query().map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn parse_token(value: Option<&String>) -> Result<Option<StreamToken>, MatrixError> {
    value.map(|v| v.parse()).transpose()
}

/// The client form of a stored event for `viewer`: `unsigned.transaction_id`
/// only for the device that sent it.
fn format_event(row: &EventRow, room_id: Option<&str>, viewer: &Identity) -> Value {
    let mut event = match room_id {
        Some(room_id) => myelin_types::events::client_event(&row.pdu, &row.event_id, room_id),
        None => myelin_types::events::sync_event(&row.pdu, &row.event_id),
    };
    if let Some((device_id, txn_id)) = &row.txn
        && *device_id == viewer.device_id
        && row.pdu.get("sender").and_then(Value::as_str) == Some(viewer.user_id.as_str())
        && let Value::Object(fields) = &mut event
        && let Value::Object(unsigned) = fields.entry("unsigned").or_insert_with(|| Value::Object(Map::new()))
    {
        unsigned.insert("transaction_id".to_owned(), Value::String(txn_id.clone()));
    }
    event
}

/// Whether `row` is a message from a user the viewer ignores, which
/// timelines leave out. State events stay: without them the room's state
/// as the client follows it would go wrong.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#ignoring-users>
fn from_ignored(ignored: &BTreeSet<String>, row: &EventRow) -> bool {
    row.pdu.get("state_key").is_none()
        && row.pdu.get("sender").and_then(Value::as_str).is_some_and(|sender| ignored.contains(sender))
}

/// What one user may read of one room, up to a stream position.
struct Access {
    /// Stream ranges `(after, upto]` whose events they may see, in order.
    ranges: Vec<(i64, i64)>,
    /// Their membership changes in the room (forgotten ones left out), oldest first.
    memberships: Vec<MembershipChange>,
    world_readable: bool,
}

/// What `identity` may read of `room_id` up to `current`.
async fn room_access(
    state: &AppState,
    identity: &Identity,
    room_id: &str,
    current: i64,
) -> Result<Access, SyncApiError> {
    let memberships = state.storage.membership_changes(identity.user_id.as_str(), Some(room_id), current).await?;
    let view = RoomView::load(&state.storage, room_id, &memberships, current).await?;
    let world_readable = view.current_visibility() == HistoryVisibility::WorldReadable;
    // Backfilled history lies before position 1 (see `Storage::apply`): a
    // range open from the room's start takes it in.
    let ranges = view
        .visible_ranges()
        .into_iter()
        .map(|(after, upto)| if after == 0 { (i64::MIN, upto) } else { (after, upto) })
        .collect();
    Ok(Access { ranges, memberships, world_readable })
}

/// The stream ranges of `room_id` whose events `identity` may read, up to
/// `current`; `M_FORBIDDEN` for someone who has never been in the room
/// unless it is world-readable.
async fn readable_ranges(
    state: &AppState,
    identity: &Identity,
    room_id: &str,
    current: i64,
) -> Result<Vec<(i64, i64)>, SyncApiError> {
    let access = room_access(state, identity, room_id, current).await?;
    if access.memberships.is_empty() && !access.world_readable {
        return Err(MatrixError::forbidden("You are not and have not been a member of this room").into());
    }
    Ok(access.ranges)
}

/// Whether stream position `pos` lies in one of `ranges` (each `(after, upto]`).
fn in_ranges(ranges: &[(i64, i64)], pos: i64) -> bool {
    ranges.iter().any(|&(after, upto)| after < pos && pos <= upto)
}

/// Up to `limit` events in `ranges` (visible ones, see [`crate::visibility`])
/// and in `(after, upto]` that pass `keep`, walking
/// backwards (newest first) or forwards; `true` when more such events exist.
#[allow(clippy::too_many_arguments)]
async fn visible_events(
    storage: &Storage,
    room_id: &str,
    ranges: &[(i64, i64)],
    after: i64,
    upto: i64,
    backwards: bool,
    limit: usize,
    keep: impl Fn(&EventRow) -> bool,
) -> Result<(Vec<EventRow>, bool), SyncApiError> {
    let want = limit + 1;
    let mut out = Vec::new();
    let mut clipped: Vec<(i64, i64)> =
        ranges.iter().map(|&(a, b)| (a.max(after), b.min(upto))).filter(|(a, b)| a < b).collect();
    if backwards {
        clipped.reverse();
    }
    'ranges: for (mut lo, mut hi) in clipped {
        loop {
            let batch = (want - out.len()).max(32);
            let rows = storage.events_between(room_id, lo, hi, backwards, batch as i64).await?;
            let fetched = rows.len();
            for row in rows {
                if backwards {
                    hi = row.pos - 1;
                } else {
                    lo = row.pos;
                }
                if keep(&row) {
                    out.push(row);
                    if out.len() == want {
                        break 'ranges;
                    }
                }
            }
            if fetched < batch {
                break;
            }
        }
    }
    let more = out.len() > limit;
    out.truncate(limit);
    Ok((out, more))
}
