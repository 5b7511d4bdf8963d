//! The events every read endpoint serves, with what the server adds under
//! `unsigned`: `age`, the state a state event replaced, and the bundled
//! aggregations of its child events (`m.relations`), counting only the
//! children the viewer may see and that no user they ignore sent.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#aggregations-of-child-events>

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use myelin_clientapi::api::Identity;
use myelin_types::redaction;
use serde_json::{Map, Value, json};

use super::{AppState, format_event, in_ranges};
use crate::SyncApiError;
use crate::storage::{EventRow, Related};

/// Who the events are served to, in which room, and which stream ranges
/// of it they may read (see [`super::readable_ranges`]).
pub(super) struct Viewer<'a> {
    pub identity: &'a Identity,
    pub room_id: &'a str,
    pub ranges: &'a [(i64, i64)],
    /// Whether events carry their `room_id` (everywhere but `/sync`).
    pub with_room_id: bool,
}

/// `rows` in client format for `viewer`, with their server-added `unsigned` fields.
pub(super) async fn client_events(
    state: &AppState,
    viewer: &Viewer<'_>,
    rows: &[EventRow],
) -> Result<Vec<Value>, SyncApiError> {
    let rows = &*as_erasure_leaves_them(state, viewer, rows).await?;
    let ignored = state.storage.ignored_users(viewer.identity.user_id.as_str()).await?;
    let children = children(state, viewer, &ignored, rows).await?;
    // The latest event of each thread goes with its own edits, but without
    // thread summaries: threads do not nest.
    let latest_ids: Vec<&str> = children
        .values()
        .filter_map(|related| related.iter().rev().find(|r| r.rel_type == "m.thread"))
        .map(|r| r.event_id.as_str())
        .collect();
    let latest_rows = state.storage.rows(viewer.room_id, &latest_ids).await?;
    let latest_children = self::children(state, viewer, &ignored, &latest_rows).await?;
    let latest_events = decorate(state, viewer, &latest_rows, &latest_children, &HashMap::new()).await?;
    let latest: HashMap<&str, Value> = latest_rows.iter().map(|row| row.event_id.as_str()).zip(latest_events).collect();
    decorate(state, viewer, rows, &children, &latest).await
}

/// `rows` with the events of erased accounts redacted, unless the viewer
/// was joined to the room when they were sent (and so saw them then).
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountdeactivate>
async fn as_erasure_leaves_them<'r>(
    state: &AppState,
    viewer: &Viewer<'_>,
    rows: &'r [EventRow],
) -> Result<Cow<'r, [EventRow]>, SyncApiError> {
    if !rows.iter().any(|row| state.storage.is_erased(sender_of(row))) {
        return Ok(Cow::Borrowed(rows));
    }
    let user_id = viewer.identity.user_id.as_str();
    let memberships = state.storage.membership_changes(user_id, Some(viewer.room_id), i64::MAX).await?;
    let joined_at = |pos: i64| memberships.iter().rev().find(|m| m.pos <= pos).is_some_and(|m| m.membership == "join");
    let create = state.storage.state_event_at(viewer.room_id, "m.room.create", "", i64::MAX).await?;
    let version = create.as_ref().and_then(|row| row.pdu["content"]["room_version"].as_str()).unwrap_or("1");
    let Some(rules) = redaction::rules_of(version) else { return Ok(Cow::Borrowed(rows)) };
    let mut rows = rows.to_vec();
    for row in &mut rows {
        if state.storage.is_erased(sender_of(row)) && !joined_at(row.pos) {
            row.pdu = redaction::stripped(&row.pdu, &rules).unwrap_or_else(|| row.pdu.clone());
        }
    }
    Ok(Cow::Owned(rows))
}

fn sender_of(row: &EventRow) -> &str {
    row.pdu.get("sender").and_then(Value::as_str).unwrap_or_default()
}

/// The visible events relating to each of `rows` by a bundled relation
/// type, oldest first, less those of `ignored` senders.
async fn children(
    state: &AppState,
    viewer: &Viewer<'_>,
    ignored: &BTreeSet<String>,
    rows: &[EventRow],
) -> Result<HashMap<String, Vec<Related>>, SyncApiError> {
    let ids: Vec<&str> = rows.iter().map(|row| row.event_id.as_str()).collect();
    let mut children: HashMap<String, Vec<Related>> = HashMap::new();
    for related in state.storage.related_to(viewer.room_id, &ids).await? {
        if in_ranges(viewer.ranges, related.pos) && !ignored.contains(&related.sender) {
            children.entry(related.parent_id.clone()).or_default().push(related);
        }
    }
    Ok(children)
}

/// `rows` in client format with `age`, the state they replaced and their
/// bundles from `children`, whose threads' latest events `latest` holds.
async fn decorate(
    state: &AppState,
    viewer: &Viewer<'_>,
    rows: &[EventRow],
    children: &HashMap<String, Vec<Related>>,
    latest: &HashMap<&str, Value>,
) -> Result<Vec<Value>, SyncApiError> {
    let state_ids: Vec<&str> =
        rows.iter().filter(|row| row.pdu.get("state_key").is_some()).map(|row| row.event_id.as_str()).collect();
    let replaced = state.storage.replaced_state(&state_ids).await?;
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    Ok(rows
        .iter()
        .map(|row| {
            let mut event = format_event(row, viewer.with_room_id.then_some(viewer.room_id), viewer.identity);
            let unsigned = unsigned_of(&mut event);
            if let Some(sent) = row.pdu.get("origin_server_ts").and_then(Value::as_i64) {
                unsigned.insert("age".to_owned(), json!(now.saturating_sub(sent).max(0)));
            }
            if let Some(before) = replaced.get(&row.event_id) {
                unsigned.insert("replaces_state".to_owned(), json!(before.event_id));
                unsigned.insert("prev_content".to_owned(), before.content.clone());
                unsigned.insert("prev_sender".to_owned(), json!(before.sender));
            }
            if let Some(related) = children.get(&row.event_id) {
                let bundle = bundle(viewer, row, related, latest);
                if !bundle.is_empty() {
                    unsigned.insert("m.relations".to_owned(), Value::Object(bundle));
                }
            }
            event
        })
        .collect())
}

/// The event's `unsigned` object, made if it has none.
fn unsigned_of(event: &mut Value) -> &mut Map<String, Value> {
    let Value::Object(fields) = event else { unreachable!("client events are objects") };
    let unsigned = fields.entry("unsigned").or_insert_with(|| Value::Object(Map::new()));
    if !unsigned.is_object() {
        *unsigned = Value::Object(Map::new());
    }
    unsigned.as_object_mut().expect("made an object above")
}

/// The `m.relations` bundle of `row` from its visible children.
fn bundle(
    viewer: &Viewer<'_>,
    row: &EventRow,
    related: &[Related],
    latest: &HashMap<&str, Value>,
) -> Map<String, Value> {
    let mut bundle = Map::new();
    if let Some(replacement) = replacement(row, related) {
        let edit = format_event(replacement, viewer.with_room_id.then_some(viewer.room_id), viewer.identity);
        bundle.insert("m.replace".to_owned(), edit);
    }
    let thread: Vec<&Related> = related.iter().filter(|r| r.rel_type == "m.thread").collect();
    if let Some(last) = thread.last()
        && let Some(latest_event) = latest.get(last.event_id.as_str())
    {
        let me = viewer.identity.user_id.as_str();
        let participated =
            row.pdu.get("sender").and_then(Value::as_str) == Some(me) || thread.iter().any(|r| r.sender == me);
        bundle.insert(
            "m.thread".to_owned(),
            json!({ "latest_event": latest_event, "count": thread.len(), "current_user_participated": participated }),
        );
    }
    let references: Vec<Value> =
        related.iter().filter(|r| r.rel_type == "m.reference").map(|r| json!({ "event_id": r.event_id })).collect();
    if !references.is_empty() {
        bundle.insert("m.reference".to_owned(), json!({ "chunk": references }));
    }
    bundle
}

/// The replacement to bundle with `original`: the most recent valid one
/// (by `origin_server_ts`, then event id), none for a redacted original.
/// A replacement is valid from the original's sender, of its type, neither
/// being a state event nor the original itself a replacement.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#validity-of-replacement-events>
fn replacement<'a>(original: &EventRow, related: &'a [Related]) -> Option<&'a EventRow> {
    let pdu = &original.pdu;
    let redacted = pdu.pointer("/unsigned/redacted_because").is_some();
    let is_replacement = pdu.pointer("/content/m.relates_to/rel_type").and_then(Value::as_str) == Some("m.replace");
    if redacted || is_replacement || pdu.get("state_key").is_some() {
        return None;
    }
    related
        .iter()
        .filter_map(|r| r.replacement.as_ref())
        .filter(|edit| {
            edit.pdu.get("sender") == pdu.get("sender")
                && edit.pdu.get("type") == pdu.get("type")
                && edit.pdu.get("state_key").is_none()
        })
        .max_by(|a, b| {
            let ts = |e: &EventRow| e.pdu.get("origin_server_ts").and_then(Value::as_i64).unwrap_or(0);
            ts(a).cmp(&ts(b)).then_with(|| a.event_id.cmp(&b.event_id))
        })
}
