//! Events relating to an event (threads, edits, annotations, references)
//! and a room's threads, read with the same history visibility as
//! `/messages`.

use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, in_ranges, parse_token, query_params, readable_ranges};
use crate::SyncApiError;
use crate::token::StreamToken;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

fn limit_param(value: Option<&String>) -> Result<usize, MatrixError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) => Ok(limit
            .parse::<usize>()
            .map_err(|_| MatrixError::invalid_param("limit must be a non-negative integer"))?
            .clamp(1, MAX_LIMIT)),
    }
}

/// GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidrelationseventid>
///
/// `recurse` is accepted and answered with direct relations only
/// (`recursion_depth` 1).
pub async fn relations(
    State(state): State<AppState>,
    Path(path): Path<Vec<String>>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let (room_id, event_id) = (&path[0], &path[1]);
    let (rel_type, event_type) = (path.get(2).map(String::as_str), path.get(3).map(String::as_str));
    let params = query_params(&parts);
    let backwards = match params.get("dir").map(String::as_str) {
        None | Some("b") => true,
        Some("f") => false,
        Some(_) => return Err(MatrixError::invalid_param("dir must be 'b' or 'f'").into()),
    };
    let limit = limit_param(params.get("limit"))?;
    let from = parse_token(params.get("from"))?;
    let current = state.notifier.current().events;
    let not_found = || MatrixError::not_found("Event not found or not visible to you");
    let ranges = match readable_ranges(&state, &identity, room_id, current).await {
        Ok(ranges) => ranges,
        Err(SyncApiError::Matrix(_)) => return Err(not_found().into()),
        Err(other) => return Err(other),
    };
    match state.storage.event(room_id, event_id).await? {
        Some(parent) if in_ranges(&ranges, parent.pos) => {}
        _ => return Err(not_found().into()),
    }
    let (after, upto) = match (backwards, from) {
        (true, from) => (0, from.map_or(current, |t| t.0.min(current))),
        (false, from) => (from.map_or(0, |t| t.0), current),
    };
    // Read one more than asked, after dropping what the requester may not see.
    let mut chunk = Vec::new();
    let mut cursor = (after, upto);
    let mut more = false;
    loop {
        let batch = (limit + 1) as i64;
        let rows = state
            .storage
            .relations(room_id, event_id, rel_type, event_type, cursor.0, cursor.1, backwards, batch)
            .await?;
        let fetched = rows.len();
        for row in rows {
            if backwards {
                cursor.1 = row.pos - 1
            } else {
                cursor.0 = row.pos
            }
            if in_ranges(&ranges, row.pos) {
                if chunk.len() == limit {
                    more = true;
                    break;
                }
                chunk.push(row);
            }
        }
        if more || (fetched as i64) < batch {
            break;
        }
    }
    let viewer = Viewer { identity: &identity, room_id, ranges: &ranges, with_room_id: true };
    let mut body = json!({
        "chunk": client_events(&state, &viewer, &chunk).await?,
        "recursion_depth": 1,
    });
    if more && let Some(last) = chunk.last() {
        let next = if backwards { last.pos - 1 } else { last.pos };
        body["next_batch"] = Value::String(StreamToken(next).to_string());
    }
    Ok(Json(body))
}

/// GET /_matrix/client/v1/rooms/{roomId}/threads
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidthreads>
pub async fn threads(
    State(state): State<AppState>,
    Path(room_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let params = query_params(&parts);
    let participant = match params.get("include").map(String::as_str) {
        None | Some("all") => None,
        Some("participated") => Some(identity.user_id.as_str()),
        Some(_) => return Err(MatrixError::invalid_param("include must be 'all' or 'participated'").into()),
    };
    let limit = limit_param(params.get("limit"))?;
    let before = match params.get("from") {
        None => i64::MAX,
        Some(token) => token.parse().map_err(|_| MatrixError::invalid_param("Invalid from token"))?,
    };
    let current = state.notifier.current().events;
    let ranges = readable_ranges(&state, &identity, &room_id, current).await?;
    let roots = state.storage.threads(&room_id, participant, before, (limit + 1) as i64).await?;
    let more = roots.len() > limit;
    let visible: Vec<crate::storage::EventRow> = roots
        .iter()
        .take(limit)
        .filter(|(root, _)| in_ranges(&ranges, root.pos))
        .map(|(root, _)| root.clone())
        .collect();
    let viewer = Viewer { identity: &identity, room_id: &room_id, ranges: &ranges, with_room_id: true };
    let mut body = json!({ "chunk": client_events(&state, &viewer, &visible).await? });
    if more && let Some((_, latest)) = roots.get(limit - 1) {
        body["next_batch"] = Value::String(latest.to_string());
    }
    Ok(Json(body))
}
