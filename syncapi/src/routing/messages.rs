use std::collections::BTreeSet;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_roomserver::api::{
    Backfill, INPUT_TOPIC, InputOk, InputReply, InputRequest, MAX_SERVER_READ_EVENTS, PduOutcome, REQUEST_TIMEOUT,
};
use myelin_types::MatrixError;
use myelin_types::ruma::OwnedRoomId;
use serde_json::{Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, from_ignored, parse_token, query_params, readable_ranges, visible_events};
use crate::SyncApiError;
use crate::filter::{self, RoomEventFilter};
use crate::storage::EventRow;
use crate::token::StreamToken;

const MEMBER: &str = "m.room.member";
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;
/// How long `/messages` waits for backfilled events to reach the read model.
const BACKFILL_WAIT: Duration = Duration::from_secs(10);

/// GET /_matrix/client/v3/rooms/{roomId}/messages
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidmessages>
pub async fn messages(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate_guest_ok(&parts).await?;
    let params = query_params(&parts);
    let backwards = match params.get("dir").map(String::as_str) {
        Some("b") => true,
        Some("f") => false,
        _ => return Err(MatrixError::invalid_param("dir must be 'b' or 'f'").into()),
    };
    let from = parse_token(params.get("from"))?;
    let to = parse_token(params.get("to"))?;
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer"))?
            .clamp(1, MAX_LIMIT),
    };
    let event_filter: Option<RoomEventFilter> = match params.get("filter") {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| MatrixError::bad_json(format!("filter: {e}")))?),
    };

    let current = state.notifier.current().events;
    let ranges = readable_ranges(&state, &identity, &room_id, current).await?;
    let (start, after, upto) = if backwards {
        let start = from.map_or(current, |t| t.0.min(current));
        (start, to.map_or(i64::MIN, |t| t.0), start)
    } else {
        let start = from.map_or(0, |t| t.0);
        (start, start, to.map_or(current, |t| t.0.min(current)))
    };
    let ignored = state.storage.ignored_users(identity.user_id.as_str()).await?;
    let page = || {
        visible_events(&state.storage, &room_id, &ranges, after, upto, backwards, limit, |row| {
            filter::passes(event_filter.as_ref(), &room_id, &row.pdu) && !from_ignored(&ignored, row)
        })
    };
    let (mut events, mut more) = page().await?;
    // The start of what this server has: older history may be on the
    // servers it joined the room through.
    if backwards
        && !more
        && to.is_none()
        && !state.storage.has_whole_history(&room_id).await?
        && backfill(&state, &room_id, limit).await
    {
        (events, more) = page().await?;
    }
    let lazy = event_filter.as_ref().and_then(|f| f.lazy_load_members).unwrap_or(false);
    let members = if lazy { sender_members(&state, &room_id, &events).await? } else { Vec::new() };
    let viewer = Viewer { identity: &identity, room_id: &room_id, ranges: &ranges, with_room_id: true };
    let mut body = json!({
        "chunk": client_events(&state, &viewer, &events).await?,
        "start": StreamToken(start).to_string(),
        "state": client_events(&state, &viewer, &members).await?,
    });
    if more && let Some(last) = events.last() {
        let end = if backwards { last.pos - 1 } else { last.pos };
        body["end"] = Value::String(StreamToken(end).to_string());
    }
    Ok(Json(body))
}

/// The member events of the senders of `events`, as of the newest of them:
/// what a lazy-loading client needs to show the page.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#lazy-loading-room-members>
async fn sender_members(state: &AppState, room_id: &str, events: &[EventRow]) -> Result<Vec<EventRow>, SyncApiError> {
    let Some(newest) = events.iter().map(|e| e.pos).max() else { return Ok(Vec::new()) };
    let senders: BTreeSet<&str> = events.iter().filter_map(|e| e.pdu.get("sender").and_then(Value::as_str)).collect();
    let mut members = Vec::with_capacity(senders.len());
    for sender in senders {
        members.extend(state.storage.state_event_at(room_id, MEMBER, sender, newest).await?);
    }
    Ok(members)
}

/// Ask the room server for the history before the earliest events it has
/// of the room (it backfills from other servers over federation), then
/// wait until the events it accepted are stored here: they arrive through
/// `roomserver.output`, after the reply. `true` when new history arrived.
async fn backfill(state: &AppState, room_id: &str, limit: usize) -> bool {
    let Ok(room_id) = OwnedRoomId::try_from(room_id) else { return false };
    let limit = u32::try_from(limit).unwrap_or(u32::MAX).min(MAX_SERVER_READ_EVENTS);
    let request = InputRequest::Backfill(Backfill { room_id: room_id.clone(), limit });
    let reply: Result<InputReply, _> =
        state.bus.request_json(INPUT_TOPIC, room_id.as_str(), &request, REQUEST_TIMEOUT).await;
    let accepted: Vec<String> = match reply {
        Ok(Ok(InputOk::PdusProcessed { results })) => results
            .into_iter()
            .filter(|result| result.outcome == PduOutcome::Accepted)
            .filter_map(|result| result.event_id.map(|id| id.to_string()))
            .collect(),
        Ok(other) => {
            tracing::debug!(?other, %room_id, "no history backfilled");
            return false;
        }
        Err(error) => {
            tracing::warn!(%error, %room_id, "the room server did not answer a backfill request");
            return false;
        }
    };
    let deadline = tokio::time::Instant::now() + BACKFILL_WAIT;
    for event_id in &accepted {
        loop {
            match state.storage.event(room_id.as_str(), event_id).await {
                Ok(Some(_)) => break,
                Ok(None) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // Late or failing: answer with what is here; the next page asks again.
                _ => return true,
            }
        }
    }
    !accepted.is_empty()
}
