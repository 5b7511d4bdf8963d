//! Single events and the context around one, read by what the requester may
//! see (the same history visibility as `/messages`).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_clientapi::api::Identity;
use myelin_types::{ErrorCode, MatrixError};
use serde_json::{Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, in_ranges, query_params, readable_ranges, visible_events};
use crate::SyncApiError;
use crate::filter::{self, RoomEventFilter};
use crate::storage::EventRow;
use crate::token::StreamToken;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;

/// The event, if `identity` may see it; a missing event and a hidden one
/// both answer 404, so that ids cannot be probed.
async fn visible_event(
    state: &AppState,
    identity: &Identity,
    room_id: &str,
    event_id: &str,
    current: i64,
) -> Result<(EventRow, Vec<(i64, i64)>), SyncApiError> {
    let not_found = || MatrixError::new(ErrorCode::NotFound, "Event not found or not visible to you");
    let ranges = match readable_ranges(state, identity, room_id, current).await {
        Ok(ranges) => ranges,
        Err(SyncApiError::Matrix(_)) => return Err(not_found().into()),
        Err(other) => return Err(other),
    };
    match state.storage.event(room_id, event_id).await? {
        Some(row) if row.pos <= current && in_ranges(&ranges, row.pos) => Ok((row, ranges)),
        _ => Err(not_found().into()),
    }
}

/// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomideventeventid>
pub async fn event(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate_guest_ok(&parts).await?;
    let current = state.notifier.current().events;
    let (row, ranges) = visible_event(&state, &identity, &room_id, &event_id, current).await?;
    let viewer = Viewer { identity: &identity, room_id: &room_id, ranges: &ranges, with_room_id: true };
    let mut events = client_events(&state, &viewer, std::slice::from_ref(&row)).await?;
    Ok(Json(events.pop().unwrap_or_default()))
}

/// GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidcontexteventid>
///
/// `limit` counts the events on both sides: half before (rounded down),
/// the rest after. `state` is the state at the last event returned.
pub async fn context(
    State(state): State<AppState>,
    Path((room_id, event_id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate_guest_ok(&parts).await?;
    let params = query_params(&parts);
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer"))?
            .min(MAX_LIMIT),
    };
    let event_filter: Option<RoomEventFilter> = match params.get("filter") {
        None => None,
        Some(text) => Some(serde_json::from_str(text).map_err(|e| MatrixError::bad_json(format!("filter: {e}")))?),
    };
    let current = state.notifier.current().events;
    let (row, ranges) = visible_event(&state, &identity, &room_id, &event_id, current).await?;
    let keep = |e: &EventRow| filter::passes(event_filter.as_ref(), &room_id, &e.pdu);
    let before_limit = limit / 2;
    let (before, _) =
        visible_events(&state.storage, &room_id, &ranges, 0, row.pos - 1, true, before_limit, keep).await?;
    let (after, _) =
        visible_events(&state.storage, &room_id, &ranges, row.pos, current, false, limit - before_limit, keep).await?;

    let start = before.last().map_or(row.pos - 1, |e| e.pos - 1);
    let end = after.last().map_or(row.pos, |e| e.pos);
    let mut room_state = state.storage.state_at(&room_id, end).await?;
    if event_filter.as_ref().and_then(|f| f.lazy_load_members).unwrap_or(false) {
        let senders: BTreeSet<&str> =
            before.iter().chain([&row]).chain(&after).filter_map(|e| e.pdu["sender"].as_str()).collect();
        room_state.retain(|e| {
            e.pdu["type"] != "m.room.member" || senders.contains(e.pdu["state_key"].as_str().unwrap_or(""))
        });
    }
    let viewer = Viewer { identity: &identity, room_id: &room_id, ranges: &ranges, with_room_id: true };
    let mut event = client_events(&state, &viewer, std::slice::from_ref(&row)).await?;
    Ok(Json(json!({
        "start": StreamToken(start).to_string(),
        "end": StreamToken(end).to_string(),
        "events_before": client_events(&state, &viewer, &before).await?,
        "event": event.pop().unwrap_or_default(),
        "events_after": client_events(&state, &viewer, &after).await?,
        "state": client_events(&state, &viewer, &room_state).await?,
    })))
}
