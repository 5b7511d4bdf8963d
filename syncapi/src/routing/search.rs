//! Server-side search over the rooms the requester is joined to, with the
//! same history visibility as `/messages`.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Request, State};
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, in_ranges, query_params, readable_ranges};
use crate::SyncApiError;
use crate::filter::{self, RoomEventFilter};

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Candidates read per database round while filling a page.
const BATCH: i64 = 200;

/// The searchable keys and the event type each belongs to.
const KEYS: &[(&str, &str, &str)] = &[
    ("content.body", "m.room.message", "body"),
    ("content.name", "m.room.name", "name"),
    ("content.topic", "m.room.topic", "topic"),
];

#[derive(Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<RoomEventFilter>,
    order_by: Option<String>,
}

/// POST /_matrix/client/v3/search
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3search>
///
/// Every word of `search_term` must occur in one of the searched keys,
/// ignoring letter case. Results are newest first (`rank` ordering is
/// answered the same way, every rank being 1); `event_context` and
/// `groupings` are not supported yet.
pub async fn search(State(state): State<AppState>, request: Request) -> Result<Json<Value>, SyncApiError> {
    let (parts, body) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let body: SearchBody = super::json_body(body).await?;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    if !matches!(criteria.order_by.as_deref(), None | Some("recent") | Some("rank")) {
        return Err(MatrixError::invalid_param("order_by must be recent or rank").into());
    }
    let keys = searched_keys(criteria.keys.as_deref())?;
    let words: Vec<String> = criteria.search_term.split_whitespace().map(str::to_lowercase).collect();
    let Some(longest) = words.iter().max_by_key(|w| w.len()).cloned() else {
        return Err(MatrixError::invalid_param("search_term must contain a word").into());
    };
    let params = query_params(&parts);
    let mut before = match params.get("next_batch") {
        None => i64::MAX,
        Some(token) => token.parse().map_err(|_| MatrixError::invalid_param("Invalid next_batch"))?,
    };
    let filter = criteria.filter.as_ref();
    let limit = filter.and_then(|f| f.limit).map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));

    let current = state.notifier.current().events;
    let user_id = identity.user_id.as_str();
    let mut ranges: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut results = Vec::new();
    let mut exhausted = false;
    while results.len() < limit && !exhausted {
        let batch = state.storage.search_candidates(user_id, &longest, before.min(current + 1), BATCH).await?;
        exhausted = (batch.len() as i64) < BATCH;
        for (room_id, row) in batch {
            before = row.pos;
            if !ranges.contains_key(&room_id) {
                let readable = match readable_ranges(&state, &identity, &room_id, current).await {
                    Ok(readable) => readable,
                    Err(SyncApiError::Matrix(_)) => Vec::new(),
                    Err(other) => return Err(other),
                };
                ranges.insert(room_id.clone(), readable);
            }
            let visible = in_ranges(&ranges[&room_id], row.pos);
            if visible && filter::passes(filter, &room_id, &row.pdu) && contains_words(&row.pdu, &keys, &words) {
                let viewer =
                    Viewer { identity: &identity, room_id: &room_id, ranges: &ranges[&room_id], with_room_id: true };
                let mut served = client_events(&state, &viewer, std::slice::from_ref(&row)).await?;
                results.push(json!({ "rank": 1.0, "result": served.pop().unwrap_or_default() }));
                if results.len() == limit {
                    break;
                }
            }
        }
    }
    let mut room_events = json!({ "count": results.len(), "results": results, "highlights": words });
    if !exhausted || results.len() == limit {
        room_events["next_batch"] = Value::String(before.to_string());
    }
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}

/// The `(key, event type, content field)` entries to search; all by default.
fn searched_keys(keys: Option<&[String]>) -> Result<Vec<(&'static str, &'static str, &'static str)>, MatrixError> {
    let Some(keys) = keys else { return Ok(KEYS.to_vec()) };
    keys.iter()
        .map(|key| {
            KEYS.iter()
                .find(|(name, _, _)| name == key)
                .copied()
                .ok_or_else(|| MatrixError::invalid_param(format!("Cannot search {key}")))
        })
        .collect()
}

/// Whether every word occurs, ignoring case, in the event's searched field.
fn contains_words(pdu: &Value, keys: &[(&str, &str, &str)], words: &[String]) -> bool {
    let event_type = pdu["type"].as_str().unwrap_or_default();
    keys.iter().filter(|(_, kind, _)| *kind == event_type).any(|(_, _, field)| {
        let text = pdu["content"][*field].as_str().unwrap_or_default().to_lowercase();
        words.iter().all(|word| text.contains(word.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_words_must_be_in_a_searched_field() {
        let message = json!({"type": "m.room.message", "content": {"body": "The Quick brown fox"}});
        let words = |text: &str| text.split_whitespace().map(str::to_lowercase).collect::<Vec<_>>();
        assert!(contains_words(&message, KEYS, &words("quick FOX")));
        assert!(!contains_words(&message, KEYS, &words("quick dog")));
        let bodies_only = searched_keys(Some(&["content.name".to_owned()])).unwrap();
        assert!(!contains_words(&message, &bodies_only, &words("quick")));
        assert!(searched_keys(Some(&["content.nope".to_owned()])).is_err());
    }
}
