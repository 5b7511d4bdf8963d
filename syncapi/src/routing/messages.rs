use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::{AppState, format_event, parse_token, query_params, readable_ranges, visible_events};
use crate::SyncApiError;
use crate::filter::{self, RoomEventFilter};
use crate::token::StreamToken;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 1000;

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
        (start, to.map_or(0, |t| t.0), start)
    } else {
        let start = from.map_or(0, |t| t.0);
        (start, start, to.map_or(current, |t| t.0.min(current)))
    };
    let (events, more) = visible_events(&state.storage, &room_id, &ranges, after, upto, backwards, limit, |row| {
        filter::passes(event_filter.as_ref(), &room_id, &row.pdu)
    })
    .await?;
    let mut body = json!({
        "chunk": events.iter().map(|e| format_event(e, Some(&room_id), &identity)).collect::<Vec<_>>(),
        "start": StreamToken(start).to_string(),
        "state": [],
    });
    if more && let Some(last) = events.last() {
        let end = if backwards { last.pos - 1 } else { last.pos };
        body["end"] = Value::String(StreamToken(end).to_string());
    }
    Ok(Json(body))
}
