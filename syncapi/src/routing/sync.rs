use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use myelin_clientapi::api::Identity;
use myelin_types::MatrixError;
use serde_json::{Map, Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, from_ignored, query_params, visible_events};
use crate::SyncApiError;
use crate::filter::{self, Filter};
use crate::storage::{EventRow, MembershipChange, Storage};
use crate::token::{StreamToken, SyncToken};
use crate::visibility::RoomView;

/// To-device messages per response; the rest follow in the next ones.
const TO_DEVICE_LIMIT: i64 = 100;

/// The longest a client may make `/sync` wait.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Members named in a room summary.
const HEROES: i64 = 5;

const MEMBER: &str = "m.room.member";

/// State whose change changes a room summary.
const SUMMARY_TYPES: &[&str] = &["m.room.member", "m.room.name", "m.room.canonical_alias"];

/// State types an invitee or knocker sees before joining (stripped state).
const INVITE_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
];

struct SyncRequest {
    identity: Identity,
    since: Option<SyncToken>,
    full_state: bool,
    filter: Filter,
    /// Users whose messages and invites are left out.
    ignored: BTreeSet<String>,
}

/// GET /_matrix/client/v3/sync
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync>
pub async fn sync(State(state): State<AppState>, request: Request) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate_guest_ok(&parts).await?;
    let params = query_params(&parts);
    let since = params.get("since").map(|t| t.parse::<SyncToken>()).transpose()?;
    let timeout = timeout_param(params.get("timeout"))?;
    let full_state = match params.get("full_state").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(MatrixError::invalid_param("full_state must be true or false").into()),
    };
    super::presence::on_sync(&state, &identity, params.get("set_presence").map(String::as_str)).await?;
    let filter = match params.get("filter") {
        None => Filter::default(),
        Some(text) if text.trim_start().starts_with('{') => {
            let value: Value = serde_json::from_str(text)
                .map_err(|e| MatrixError::new(myelin_types::ErrorCode::NotJson, e.to_string()))?;
            Filter::from_value(&value).map_err(MatrixError::bad_json)?
        }
        Some(id) => {
            let stored = match id.parse::<i64>() {
                Ok(id) => state.storage.filter(identity.user_id.as_str(), id).await?,
                Err(_) => None,
            };
            let stored = stored.ok_or_else(|| MatrixError::invalid_param(format!("Unknown filter {id:?}")))?;
            Filter::from_value(&stored).map_err(MatrixError::bad_json)?
        }
    };
    let ignored = state.storage.ignored_users(identity.user_id.as_str()).await?;
    let request = SyncRequest { identity, since, full_state, filter, ignored };

    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = state.notifier.current();
        let (body, empty) = compute(&state, &request, current).await?;
        let now = tokio::time::Instant::now();
        if request.since.is_none() || request.full_state || !empty || now >= deadline {
            return Ok(Json(body));
        }
        state.notifier.wait(request.identity.user_id.as_str(), current, deadline - now).await;
    }
}

/// How long a long poll may wait: the `timeout` query parameter in
/// milliseconds (none: not at all), at most [`MAX_TIMEOUT`].
pub(super) fn timeout_param(value: Option<&String>) -> Result<Duration, MatrixError> {
    let Some(ms) = value else {
        return Ok(Duration::ZERO);
    };
    let ms = ms.parse::<u64>().map_err(|_| MatrixError::invalid_param("timeout must be an integer"))?;
    Ok(Duration::from_millis(ms).min(MAX_TIMEOUT))
}

/// What a joined room shows besides its timeline and state.
#[derive(Default)]
struct RoomExtras {
    ephemeral: Vec<Value>,
    account_data: Vec<Value>,
}

impl RoomExtras {
    fn is_empty(&self) -> bool {
        self.ephemeral.is_empty() && self.account_data.is_empty()
    }
}

/// Account data and receipts that changed since the token (everything for
/// an initial sync): the global account data events, and per room its
/// account data events and its `m.receipt` content.
pub(super) struct Changes {
    pub global_account_data: Vec<Value>,
    pub room_account_data: BTreeMap<String, Vec<Value>>,
    pub receipts: BTreeMap<String, Map<String, Value>>,
}

/// The [`Changes`] `user_id` sees between the tokens, as `filter` lets through.
pub(super) async fn changes(
    state: &AppState,
    user_id: &str,
    filter: &Filter,
    since: Option<SyncToken>,
    current: SyncToken,
) -> Result<Changes, SyncApiError> {
    let since = since.unwrap_or_default();
    let mut global_account_data = Vec::new();
    let mut room_account_data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for row in state.storage.account_data_between(user_id, since.account_data, current.account_data).await? {
        let event = json!({ "type": row.data_type, "content": row.content });
        if row.room_id.is_empty() {
            if filter.account_data_allowed(&row.data_type) {
                global_account_data.push(event);
            }
        } else if filter::passes(filter.room_account_data(), &row.room_id, &event) {
            room_account_data.entry(row.room_id).or_default().push(event);
        }
    }
    let mut receipts: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for row in state.storage.receipts_between(user_id, since.receipts, current.receipts).await? {
        let mut receipt = json!({ "ts": row.ts });
        if let Some(thread_id) = row.thread_id {
            receipt["thread_id"] = Value::String(thread_id);
        }
        let by_event = receipts.entry(row.room_id).or_default();
        let by_type = by_event.entry(row.event_id).or_insert_with(|| json!({}));
        by_type[row.receipt_type.as_str()][row.user_id.as_str()] = receipt;
    }
    Ok(Changes { global_account_data, room_account_data, receipts })
}

/// The joined room's ephemeral events and account data to send.
fn room_extras(
    state: &AppState,
    request: &SyncRequest,
    changes: &mut Changes,
    room_id: &str,
    since: Option<SyncToken>,
    current: SyncToken,
) -> RoomExtras {
    let mut ephemeral = Vec::new();
    ephemeral.extend(typing_event(state, room_id, since.map(|s| s.typing), current.typing));
    if let Some(content) = changes.receipts.remove(room_id) {
        ephemeral.push(json!({ "type": "m.receipt", "content": content }));
    }
    ephemeral.retain(|event| filter::passes(request.filter.ephemeral(), room_id, event));
    let account_data = changes.room_account_data.remove(room_id).unwrap_or_default();
    RoomExtras { ephemeral, account_data }
}

/// The room's `m.typing` event if its typing changed in `(after, upto]`;
/// without `after` (a first sync) only if someone types: there is no
/// earlier typing to clear.
pub(super) fn typing_event(state: &AppState, room_id: &str, after: Option<i64>, upto: i64) -> Option<Value> {
    let user_ids = state.typing.changed(room_id, after.unwrap_or(0), upto, state.clock.now_ms())?;
    (after.is_some() || !user_ids.is_empty())
        .then(|| json!({ "type": "m.typing", "content": { "user_ids": user_ids } }))
}

/// The sync response at stream positions `current`; `true` when it carries nothing.
async fn compute(state: &AppState, request: &SyncRequest, current: SyncToken) -> Result<(Value, bool), SyncApiError> {
    let storage = &state.storage;
    let user_id = request.identity.user_id.as_str();
    let since_token = request.since.map(|s| s.min(current));
    let mut changes = changes(state, user_id, &request.filter, since_token, current).await?;
    let since = since_token.map(|s| s.events);
    let current_pos = current.events;
    let filter = &request.filter;

    let mut by_room: BTreeMap<String, Vec<MembershipChange>> = BTreeMap::new();
    for change in storage.membership_changes(user_id, None, current_pos).await? {
        by_room.entry(change.room_id.clone()).or_default().push(change);
    }
    let active = match since {
        Some(since) => Some(storage.rooms_with_events(since, current_pos).await?),
        None => None,
    };

    let mut join = serde_json::Map::new();
    let mut invite = serde_json::Map::new();
    let mut knock = serde_json::Map::new();
    let mut leave = serde_json::Map::new();
    for (room_id, changes_of_room) in &by_room {
        if !filter.room_allowed(room_id) {
            continue;
        }
        let last = changes_of_room.last().expect("grouped changes are never empty");
        let membership_at =
            |pos: i64| changes_of_room.iter().rev().find(|c| c.pos <= pos).map(|c| c.membership.as_str());
        let changed_since = since.is_none_or(|s| last.pos > s);
        match last.membership.as_str() {
            "join" => {
                let newly = since.is_none_or(|s| membership_at(s) != Some("join"));
                let has_events = active.as_ref().is_none_or(|rooms| rooms.contains(room_id));
                let extras = room_extras(state, request, &mut changes, room_id, since_token, current);
                if !newly && !request.full_state && !has_events && extras.is_empty() {
                    continue;
                }
                let after = if newly { 0 } else { since.unwrap_or(0) };
                let room =
                    room_body(state, request, room_id, changes_of_room, after, current_pos, newly, extras).await?;
                if let Some(mut room) = room {
                    let whole = newly || request.full_state;
                    room["summary"] =
                        summary(storage, user_id, room_id, (!whole).then_some(after), current_pos).await?;
                    join.insert(room_id.clone(), room);
                }
            }
            "invite" if changed_since && !invited_by_ignored(state, request, room_id, current_pos).await? => {
                invite.insert(
                    room_id.clone(),
                    outside_body(state, user_id, room_id, current_pos, Outside::Invite).await?,
                );
            }
            "knock" if changed_since => {
                knock
                    .insert(room_id.clone(), outside_body(state, user_id, room_id, current_pos, Outside::Knock).await?);
            }
            "leave" | "ban" if changed_since && (since.is_some() || filter.include_leave()) => {
                let after = since.unwrap_or(0);
                let room = room_body(
                    state,
                    request,
                    room_id,
                    changes_of_room,
                    after,
                    last.pos,
                    since.is_none(),
                    RoomExtras::default(),
                )
                .await?;
                leave.insert(room_id.clone(), room.unwrap_or_else(|| empty_room(last.pos)));
            }
            _ => {}
        }
    }
    let (to_device, next_batch) = to_device(state, &request.identity, since_token, current).await?;
    let (device_lists_changed, device_lists_left) = match since_token {
        Some(since) => (
            storage.device_lists_changed(user_id, since.device_lists, current.device_lists).await?,
            storage.device_lists_left(user_id, since.events, current.events).await?,
        ),
        None => (Vec::new(), Vec::new()),
    };
    let (one_time_key_counts, unused_fallback_key_types) =
        storage.key_counts(user_id, &request.identity.device_id).await?;
    let now = i64::try_from(state.clock.now_ms()).unwrap_or(i64::MAX);
    let presence: Vec<Value> = storage
        .presence_between(user_id, since_token.map_or(0, |s| s.presence), current.presence)
        .await?
        .iter()
        .map(|p| super::presence::event(p, now))
        .filter(|event| request.filter.presence_allowed(event))
        .collect();
    let empty = join.is_empty()
        && invite.is_empty()
        && knock.is_empty()
        && leave.is_empty()
        && changes.global_account_data.is_empty()
        && to_device.is_empty()
        && device_lists_changed.is_empty()
        && device_lists_left.is_empty()
        && presence.is_empty();
    let body = json!({
        "next_batch": next_batch.to_string(),
        "rooms": { "join": join, "invite": invite, "leave": leave, "knock": knock },
        "presence": { "events": presence },
        "account_data": { "events": changes.global_account_data },
        "to_device": { "events": to_device },
        "device_lists": { "changed": device_lists_changed, "left": device_lists_left },
        "device_one_time_keys_count": one_time_key_counts,
        "device_unused_fallback_key_types": unused_fallback_key_types,
    });
    Ok((body, empty))
}

/// The device's to-device messages after `since` (those up to it are
/// acknowledged and dropped), and the token that acknowledges what is sent:
/// `current`, unless the inbox holds more than one response carries.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#extensions-to-sync-4>
pub(super) async fn to_device(
    state: &AppState,
    identity: &Identity,
    since: Option<SyncToken>,
    current: SyncToken,
) -> Result<(Vec<Value>, SyncToken), SyncApiError> {
    let after = since.map_or(0, |s| s.to_device);
    let user_id = identity.user_id.as_str();
    let rows =
        state.storage.take_to_device(user_id, &identity.device_id, after, current.to_device, TO_DEVICE_LIMIT).await?;
    let mut next_batch = current;
    if rows.len() == TO_DEVICE_LIMIT as usize
        && let Some((last, _)) = rows.last()
    {
        next_batch.to_device = *last;
    }
    Ok((rows.into_iter().map(|(_, event)| event).collect(), next_batch))
}

fn empty_room(upto: i64) -> Value {
    json!({
        "timeline": { "events": [], "limited": false, "prev_batch": StreamToken(upto).to_string() },
        "state": { "events": [] },
        "account_data": { "events": [] },
    })
}

/// The latest events of a room's timeline that a user may see.
pub(super) struct Timeline {
    /// Oldest first.
    pub events: Vec<EventRow>,
    /// Whether more such events came before them.
    pub limited: bool,
    /// The stream position just before the first event (the `prev_batch`).
    pub before: i64,
    /// The stream ranges the user may see (see [`super::readable_ranges`]).
    pub ranges: Vec<(i64, i64)>,
}

/// Up to `limit` of the latest timeline events in `(after, upto]` that the
/// user with `changes` (their memberships in the room) may see
/// ([`crate::visibility`]) and that pass `keep`.
pub(super) async fn latest_timeline(
    storage: &Storage,
    room_id: &str,
    changes: &[MembershipChange],
    after: i64,
    upto: i64,
    limit: usize,
    keep: impl Fn(&EventRow) -> bool,
) -> Result<Timeline, SyncApiError> {
    let ranges = RoomView::load(storage, room_id, changes, upto).await?.visible_ranges();
    let (mut events, limited) = visible_events(storage, room_id, &ranges, after, upto, true, limit, keep).await?;
    events.reverse();
    let before = events.first().map(|e| e.pos - 1).unwrap_or(upto);
    Ok(Timeline { events, limited, before, ranges })
}

/// A joined or left room: timeline events in `(after, upto]` the user may
/// see (history visibility, [`crate::visibility`]), and the state before the timeline (all of it when `whole_state`,
/// else only what changed since `after` and is not in the timeline).
/// `None` when nothing passes the filter and there are no extras.
#[allow(clippy::too_many_arguments)]
async fn room_body(
    state: &AppState,
    request: &SyncRequest,
    room_id: &str,
    changes: &[MembershipChange],
    after: i64,
    upto: i64,
    whole_state: bool,
    extras: RoomExtras,
) -> Result<Option<Value>, SyncApiError> {
    let storage = &state.storage;
    let filter = &request.filter;
    let timeline_filter = filter.timeline();
    let timeline = latest_timeline(storage, room_id, changes, after, upto, filter.timeline_limit(), |row| {
        filter::passes(timeline_filter, room_id, &row.pdu) && !from_ignored(&request.ignored, row)
    })
    .await?;
    let whole_state = whole_state || request.full_state;
    let lazy = filter.state().and_then(|f| f.lazy_load_members).unwrap_or(false);
    let mut state_events: Vec<EventRow> = if whole_state || timeline.limited {
        // Lazy loading replaces the members with the timeline's senders.
        let mut state_rows = if lazy {
            storage.state_at_without_members(room_id, timeline.before).await?
        } else {
            storage.state_at(room_id, timeline.before).await?
        };
        if !whole_state {
            let changed = storage.state_changed_between(room_id, after, timeline.before).await?;
            state_rows.retain(|row| {
                let key = (
                    row.pdu.get("type").and_then(Value::as_str).unwrap_or_default().to_owned(),
                    row.pdu.get("state_key").and_then(Value::as_str).unwrap_or_default().to_owned(),
                );
                changed.contains(&key)
            });
        }
        state_rows.retain(|row| filter::passes(filter.state(), room_id, &row.pdu));
        state_rows
    } else {
        Vec::new()
    };
    if lazy {
        state_events = lazy_members(state, request, room_id, state_events, &timeline, upto, whole_state).await?;
    }
    if timeline.events.is_empty() && state_events.is_empty() && !whole_state && extras.is_empty() {
        return Ok(None);
    }
    let identity = &request.identity;
    let (unread, unread_threads) = storage.counts(identity.user_id.as_str(), room_id).await?;
    let viewer = Viewer { identity, room_id, ranges: &timeline.ranges, with_room_id: false };
    Ok(Some(json!({
        "timeline": {
            "events": client_events(state, &viewer, &timeline.events).await?,
            "limited": timeline.limited,
            "prev_batch": StreamToken(timeline.before).to_string(),
        },
        "state": { "events": client_events(state, &viewer, &state_events).await? },
        "ephemeral": { "events": extras.ephemeral },
        "account_data": { "events": extras.account_data },
        "unread_notifications": unread,
        "unread_thread_notifications": unread_threads,
        "summary": {},
    })))
}

/// The state of a lazy-loading sync: `state_events` without member
/// events, and instead the member events of the timeline's senders (and
/// the user's own when the state goes whole) as of before the timeline,
/// leaving out those the device already received unless the filter asks
/// for redundant members.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#lazy-loading-room-members>
async fn lazy_members(
    state: &AppState,
    request: &SyncRequest,
    room_id: &str,
    mut state_events: Vec<EventRow>,
    timeline: &Timeline,
    upto: i64,
    whole_state: bool,
) -> Result<Vec<EventRow>, SyncApiError> {
    let identity = &request.identity;
    let state_filter = request.filter.state();
    state_events.retain(|row| row.pdu.get("type").and_then(Value::as_str) != Some(MEMBER));
    let mut members: BTreeSet<&str> =
        timeline.events.iter().filter_map(|e| e.pdu.get("sender").and_then(Value::as_str)).collect();
    if whole_state {
        members.insert(identity.user_id.as_str());
    }
    let redundant = state_filter.and_then(|f| f.include_redundant_members).unwrap_or(false);
    let since = request.since.map(|s| s.events).filter(|_| !whole_state && !redundant);
    let device = (identity.user_id.to_string(), identity.device_id.clone());
    let mut sent = Vec::new();
    for member in members {
        let Some(row) = state.storage.state_event_at(room_id, MEMBER, member, timeline.before).await? else {
            continue;
        };
        let received =
            since.is_some_and(|since| state.lazy_members.received(&device, room_id, member, &row.event_id, since));
        if !received && filter::passes(state_filter, room_id, &row.pdu) {
            sent.push((member, row));
        }
    }
    state.lazy_members.record(&device, room_id, sent.iter().map(|(m, row)| (*m, row.event_id.as_str())), upto);
    state_events.extend(sent.into_iter().map(|(_, row)| row));
    state_events.sort_by_key(|row| row.pos);
    Ok(state_events)
}

/// The joined room's summary: its member counts and, when it has no name,
/// the members a client names it after; whole when `after` is `None`, else
/// only when members, name or alias changed in `(after, upto]`.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync> (`RoomSummary`)
async fn summary(
    storage: &Storage,
    user_id: &str,
    room_id: &str,
    after: Option<i64>,
    upto: i64,
) -> Result<Value, SyncApiError> {
    if let Some(after) = after {
        let changed = storage.state_changed_between(room_id, after, upto).await?;
        if !changed.iter().any(|(event_type, _)| SUMMARY_TYPES.contains(&event_type.as_str())) {
            return Ok(json!({}));
        }
    }
    let (joined, invited) = storage.member_counts(room_id).await?;
    let mut summary = json!({ "m.joined_member_count": joined, "m.invited_member_count": invited });
    let mut named = false;
    for (event_type, field) in [("m.room.name", "name"), ("m.room.canonical_alias", "alias")] {
        let entry = storage.state_event_at(room_id, event_type, "", upto).await?;
        named |= entry.is_some_and(|row| row.pdu["content"][field].as_str().is_some_and(|v| !v.is_empty()));
    }
    if !named {
        let heroes = storage.heroes(room_id, user_id, HEROES).await?;
        summary["m.heroes"] = json!(heroes.into_iter().map(|hero| hero.user_id).collect::<Vec<_>>());
    }
    Ok(summary)
}

/// Whether the user's invite to the room comes from a user they ignore:
/// such invites are not shown.
async fn invited_by_ignored(
    state: &AppState,
    request: &SyncRequest,
    room_id: &str,
    upto: i64,
) -> Result<bool, SyncApiError> {
    if request.ignored.is_empty() {
        return Ok(false);
    }
    let invite = state.storage.state_event_at(room_id, MEMBER, request.identity.user_id.as_str(), upto).await?;
    let inviter = invite.as_ref().and_then(|row| row.pdu.get("sender")).and_then(Value::as_str);
    Ok(inviter.is_some_and(|sender| request.ignored.contains(sender)))
}

/// How the user stands outside a room they see under `rooms.invite` or `rooms.knock`.
#[derive(Clone, Copy)]
pub(super) enum Outside {
    Invite,
    Knock,
}

/// An invited or knocked room: stripped state that helps the user decide
/// (or recognise the room), and their own member event.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3sync>
async fn outside_body(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    current: i64,
    outside: Outside,
) -> Result<Value, SyncApiError> {
    let section = match outside {
        Outside::Invite => "invite_state",
        Outside::Knock => "knock_state",
    };
    let events = stripped_state(state, user_id, room_id, current, outside).await?;
    Ok(json!({ section: { "events": events } }))
}

/// The stripped state an invited or knocking user sees of a room: this
/// server's own, and what the other server sent with the invite or knock.
pub(super) async fn stripped_state(
    state: &AppState,
    user_id: &str,
    room_id: &str,
    current: i64,
    outside: Outside,
) -> Result<Vec<Value>, SyncApiError> {
    let shared_state = match outside {
        Outside::Invite => "/unsigned/invite_room_state",
        Outside::Knock => "/unsigned/knock_room_state",
    };
    let room_state = state.storage.state_at(room_id, current).await?;
    let mut events: Vec<Value> = room_state
        .iter()
        .filter(|row| {
            let event_type = row.pdu.get("type").and_then(Value::as_str).unwrap_or_default();
            let state_key = row.pdu.get("state_key").and_then(Value::as_str).unwrap_or_default();
            INVITE_STATE_TYPES.contains(&event_type) || (event_type == "m.room.member" && state_key == user_id)
        })
        .map(|row| {
            let mut stripped = serde_json::Map::new();
            for key in ["type", "state_key", "content", "sender"] {
                if let Some(value) = row.pdu.get(key) {
                    stripped.insert(key.to_owned(), value.clone());
                }
            }
            Value::Object(stripped)
        })
        .collect();
    // An invite from another server's room, or a knock on one, carries
    // that server's stripped state (this server has none of the room's own).
    let shared = room_state
        .iter()
        .filter(|row| {
            row.pdu.get("type").and_then(Value::as_str) == Some("m.room.member")
                && row.pdu.get("state_key").and_then(Value::as_str) == Some(user_id)
        })
        .filter_map(|row| row.pdu.pointer(shared_state).and_then(Value::as_array))
        .flatten();
    let key = |event: &Value| (event.get("type").cloned(), event.get("state_key").cloned());
    for event in shared {
        if !events.iter().any(|known| key(known) == key(event)) {
            events.push(event.clone());
        }
    }
    Ok(events)
}
