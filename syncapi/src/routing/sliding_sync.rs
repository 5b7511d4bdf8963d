//! Simplified sliding sync (MSC4186): the client names lists (windows onto
//! its rooms sorted by latest activity, with filters) and room
//! subscriptions, and gets only the rooms in them that it has not been
//! sent on this connection or that changed since, plus extensions
//! (to-device, end-to-end keys, account data, receipts, typing). What a
//! connection was sent is kept per `pos` in [`crate::connections`].
//!
//! Rooms, timelines, visibility, stripped state and the extensions' data
//! come from the same functions `/sync` uses.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use axum::Json;
use axum::extract::{Request, State};
use myelin_clientapi::api::Identity;
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::sync::{self, Outside, Timeline};
use super::unsigned::{Viewer, client_events};
use super::{AppState, from_ignored, json_body, query_params};
use crate::SyncApiError;
use crate::filter::Filter;
use crate::storage::{EventRow, MembershipChange, ignored_users_in};
use crate::token::{StreamToken, SyncToken};

/// Lists one request may name.
const MAX_LISTS: usize = 100;

/// The most timeline events sent per room.
const MAX_TIMELINE_LIMIT: u64 = 100;

/// Members shown for a room without a name.
const HEROES: i64 = 5;

const MEMBER: &str = "m.room.member";

/// The state of one sliding sync connection after an answer.
#[derive(Default)]
pub struct ConnState {
    /// Stream positions the answer was computed at (to-device: as far as
    /// it delivered).
    token: SyncToken,
    /// Rooms sent on this connection, and how.
    rooms: HashMap<String, SentRoom>,
    /// Room subscriptions, which last until the client drops them
    /// (`unsubscribe_rooms`).
    subscriptions: BTreeMap<String, RoomConfig>,
    /// Extensions, which stay as configured until reconfigured.
    extensions: Extensions,
    /// The `count` of each list.
    counts: BTreeMap<String, usize>,
}

/// A room as the connection last saw it.
#[derive(Clone)]
struct SentRoom {
    /// The client has the room as of this event stream position.
    at: i64,
    membership: String,
    config: RoomConfig,
}

// ---- Request ----

#[derive(Debug, Default, Deserialize)]
struct SyncBody {
    conn_id: Option<String>,
    /// The newer form of the `pos` query parameter.
    pos: Option<String>,
    /// The newer form of the `timeout` query parameter.
    timeout: Option<u64>,
    set_presence: Option<String>,
    #[serde(default)]
    lists: BTreeMap<String, ListRequest>,
    #[serde(default)]
    room_subscriptions: BTreeMap<String, RoomRequest>,
    #[serde(default)]
    unsubscribe_rooms: Vec<String>,
    #[serde(default)]
    extensions: ExtensionsRequest,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct RoomRequest {
    timeline_limit: Option<u64>,
    /// `[type, state_key]` pairs; `*` matches any, `$ME` is the user,
    /// `["m.room.member", "$LAZY"]` asks for the members the timeline needs.
    #[serde(default)]
    required_state: Vec<(String, String)>,
}

#[derive(Debug, Deserialize)]
struct ListRequest {
    /// Inclusive index ranges into the filtered, sorted rooms.
    ranges: Option<Vec<(u64, u64)>>,
    /// The newer form: one range.
    range: Option<(u64, u64)>,
    #[serde(flatten)]
    room: RoomRequest,
    #[serde(default)]
    filters: ListFilters,
}

#[derive(Debug, Default, Clone, Deserialize)]
struct ListFilters {
    is_dm: Option<bool>,
    is_encrypted: Option<bool>,
    #[serde(alias = "is_invited")]
    is_invite: Option<bool>,
    /// `m.room.create` types; `null` is a room without one.
    room_types: Option<Vec<Option<String>>>,
    not_room_types: Option<Vec<Option<String>>>,
    tags: Option<Vec<String>>,
    not_tags: Option<Vec<String>>,
    /// Rooms that one of these spaces (the user is joined to) lists as an
    /// `m.space.child`; subspaces are not walked.
    spaces: Option<Vec<String>>,
    /// A case-insensitive part of the room's `m.room.name`.
    room_name_like: Option<String>,
    /// What `spaces` lets through, found before the list is filtered.
    #[serde(skip)]
    space_children: Option<HashSet<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct ExtensionsRequest {
    to_device: Option<ToDeviceRequest>,
    e2ee: Option<ExtensionRequest>,
    account_data: Option<ExtensionRequest>,
    receipts: Option<ExtensionRequest>,
    typing: Option<ExtensionRequest>,
}

#[derive(Debug, Default, Deserialize)]
struct ToDeviceRequest {
    enabled: Option<bool>,
    /// The `next_batch` of the last to-device answer the client processed.
    since: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct ExtensionRequest {
    enabled: Option<bool>,
    /// The lists whose rooms it covers (`*`: all; absent: all).
    lists: Option<Vec<String>>,
    /// The subscribed rooms it covers (`*`: all; absent: all).
    rooms: Option<Vec<String>>,
}

// ---- Connection configuration ----

/// What to send of a room, combined over the lists and subscriptions it is in.
#[derive(Debug, Clone, Default, PartialEq)]
struct RoomConfig {
    timeline_limit: usize,
    required_state: BTreeSet<(String, String)>,
}

impl RoomConfig {
    fn of(request: &RoomRequest) -> Self {
        let limit = request.timeline_limit.unwrap_or(0).min(MAX_TIMELINE_LIMIT);
        Self {
            timeline_limit: usize::try_from(limit).unwrap_or(0),
            required_state: request.required_state.iter().cloned().collect(),
        }
    }

    /// The superset of both: the larger timeline, all the state either wants.
    fn merge(&mut self, other: &RoomConfig) {
        self.timeline_limit = self.timeline_limit.max(other.timeline_limit);
        self.required_state.extend(other.required_state.iter().cloned());
    }

    /// Whether this asks for more than `old` did: the room is sent whole again.
    fn expands(&self, old: &RoomConfig) -> bool {
        self.timeline_limit > old.timeline_limit || !self.required_state.is_subset(&old.required_state)
    }

    fn lazy_members(&self) -> bool {
        self.required_state.contains(&(MEMBER.to_owned(), "$LAZY".to_owned()))
    }

    /// Whether the state entry `(event_type, state_key)` is asked for. With
    /// lazy members a type wildcard leaves members out: they come as the
    /// timeline needs them.
    fn wants(&self, event_type: &str, state_key: &str, user_id: &str) -> bool {
        let lazy = self.lazy_members();
        self.required_state.iter().any(|(t, k)| {
            let type_matches = t == event_type || (t == "*" && !(lazy && event_type == MEMBER));
            let key_matches = k == "*" || k == state_key || (k == "$ME" && state_key == user_id);
            type_matches && key_matches && k != "$LAZY"
        })
    }
}

/// An extension's sticky configuration.
#[derive(Debug, Clone, Default)]
struct Scope {
    enabled: bool,
    lists: Option<Vec<String>>,
    rooms: Option<Vec<String>>,
}

impl Scope {
    fn updated(&self, request: Option<&ExtensionRequest>) -> Scope {
        let Some(request) = request else {
            return self.clone();
        };
        Scope {
            enabled: request.enabled.unwrap_or(self.enabled),
            lists: request.lists.clone().or_else(|| self.lists.clone()),
            rooms: request.rooms.clone().or_else(|| self.rooms.clone()),
        }
    }

    /// Whether a room in `lists` (and subscribed, if `subscribed`) is covered.
    fn covers(&self, lists: &[String], subscribed: bool) -> bool {
        let named = |names: &Option<Vec<String>>, name: &str| {
            names.as_ref().is_none_or(|names| names.iter().any(|n| n == "*" || n == name))
        };
        lists.iter().any(|list| named(&self.lists, list))
            || (subscribed && self.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == "*")))
    }
}

#[derive(Debug, Clone, Default)]
struct Extensions {
    to_device: bool,
    e2ee: bool,
    account_data: Scope,
    receipts: Scope,
    typing: Scope,
}

/// One list of the request.
struct List {
    name: String,
    /// `None`: every room that passes the filters.
    ranges: Option<Vec<(u64, u64)>>,
    config: RoomConfig,
    filters: ListFilters,
}

impl List {
    fn covers(&self, index: usize) -> bool {
        let index = index as u64;
        self.ranges.as_ref().is_none_or(|ranges| ranges.iter().any(|&(from, to)| from <= index && index <= to))
    }
}

/// How the request matched one room.
#[derive(Default)]
struct Match {
    /// Combined over the lists and the subscription.
    config: RoomConfig,
    lists: Vec<String>,
    subscribed: bool,
}

/// A request, checked.
struct SlidingRequest {
    identity: Identity,
    lists: Vec<List>,
    subscriptions: BTreeMap<String, RoomConfig>,
    extensions: Extensions,
    /// The client's to-device `since`, if it sent one.
    to_device_since: Option<i64>,
}

fn unknown_pos() -> MatrixError {
    MatrixError::new(ErrorCode::UnknownPos, "Unknown or expired pos; start the connection again")
}

/// POST /_matrix/client/unstable/org.matrix.simplified_msc3575/sync
/// <https://github.com/matrix-org/matrix-spec-proposals/blob/main/proposals/4186-simplified-sliding-sync.md>
pub async fn sliding_sync(State(state): State<AppState>, request: Request) -> Result<Json<Value>, SyncApiError> {
    let (parts, body) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let params = query_params(&parts);
    let body: SyncBody = json_body(body).await?;
    let timeout = match params.get("timeout") {
        Some(_) => sync::timeout_param(params.get("timeout"))?,
        None => Duration::from_millis(body.timeout.unwrap_or(0)).min(sync::MAX_TIMEOUT),
    };
    let pos = params.get("pos").cloned().or(body.pos.clone());
    let key = (identity.user_id.to_string(), identity.device_id.clone(), body.conn_id.clone().unwrap_or_default());
    let previous = match &pos {
        Some(pos) => Some(state.sliding.get(&key, pos).ok_or_else(unknown_pos)?),
        None => None,
    };
    let presence = params.get("set_presence").or(body.set_presence.as_ref());
    super::presence::on_sync(&state, &identity, presence.map(String::as_str)).await?;
    let request = checked(identity, body, previous.as_deref())?;

    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let current = state.notifier.current();
        let (mut response, next, empty) = compute(&state, &request, previous.as_deref(), current).await?;
        let now = tokio::time::Instant::now();
        if previous.is_none() || !empty || now >= deadline {
            response["pos"] = Value::String(state.sliding.put(&key, pos.as_deref(), next));
            return Ok(Json(response));
        }
        state.notifier.wait(request.identity.user_id.as_str(), current, deadline - now).await;
    }
}

/// The request's lists, its subscriptions and extensions combined with
/// those the connection keeps.
fn checked(identity: Identity, body: SyncBody, previous: Option<&ConnState>) -> Result<SlidingRequest, MatrixError> {
    if body.lists.len() > MAX_LISTS {
        return Err(MatrixError::invalid_param(format!("At most {MAX_LISTS} lists")));
    }
    let mut lists = Vec::new();
    for (name, list) in body.lists {
        let ranges = match (list.ranges, list.range) {
            (None, None) => None,
            (ranges, range) => Some(ranges.unwrap_or_default().into_iter().chain(range).collect::<Vec<_>>()),
        };
        if ranges.iter().flatten().any(|(from, to)| from > to) {
            return Err(MatrixError::invalid_param(format!("List {name:?} has a range that ends before it starts")));
        }
        lists.push(List { name, ranges, config: RoomConfig::of(&list.room), filters: list.filters });
    }
    let mut subscriptions = previous.map(|p| p.subscriptions.clone()).unwrap_or_default();
    for room_id in &body.unsubscribe_rooms {
        subscriptions.remove(room_id);
    }
    for (room_id, room) in &body.room_subscriptions {
        subscriptions.insert(room_id.clone(), RoomConfig::of(room));
    }
    let kept = previous.map(|p| p.extensions.clone()).unwrap_or_default();
    let requested = &body.extensions;
    let extensions = Extensions {
        to_device: requested.to_device.as_ref().and_then(|e| e.enabled).unwrap_or(kept.to_device),
        e2ee: requested.e2ee.as_ref().and_then(|e| e.enabled).unwrap_or(kept.e2ee),
        account_data: kept.account_data.updated(requested.account_data.as_ref()),
        receipts: kept.receipts.updated(requested.receipts.as_ref()),
        typing: kept.typing.updated(requested.typing.as_ref()),
    };
    let to_device_since = match requested.to_device.as_ref().and_then(|e| e.since.as_deref()) {
        None => None,
        Some(since) => Some(
            since
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| MatrixError::invalid_param("to_device since is not one this server gave"))?,
        ),
    };
    Ok(SlidingRequest { identity, lists, subscriptions, extensions, to_device_since })
}

/// A room in the user's room list.
struct Candidate<'a> {
    room_id: &'a str,
    changes: &'a [MembershipChange],
    membership: &'a str,
    /// The position of the user's latest membership change.
    membership_pos: i64,
    /// Latest activity: the room's newest event for a joined room, the
    /// membership change otherwise.
    recency: i64,
}

impl Candidate<'_> {
    fn outside(&self) -> Option<Outside> {
        match self.membership {
            "invite" => Some(Outside::Invite),
            "knock" => Some(Outside::Knock),
            _ => None,
        }
    }

    /// The last event position the user sees of the room.
    fn upto(&self, current: i64) -> i64 {
        if self.membership == "join" { current } else { self.membership_pos }
    }
}

/// Per-request memo of what the filters and room entries read.
#[derive(Default)]
struct Facts {
    stripped: HashMap<String, Vec<Value>>,
    /// The content of a state entry with an empty state key, per room and type.
    state: HashMap<(String, String), Option<Value>>,
}

impl Facts {
    async fn stripped(
        &mut self,
        state: &AppState,
        user_id: &str,
        room: &Candidate<'_>,
        current: i64,
    ) -> Result<Vec<Value>, SyncApiError> {
        if let Some(events) = self.stripped.get(room.room_id) {
            return Ok(events.clone());
        }
        let outside = room.outside().unwrap_or(Outside::Invite);
        let events = sync::stripped_state(state, user_id, room.room_id, current, outside).await?;
        self.stripped.insert(room.room_id.to_owned(), events.clone());
        Ok(events)
    }

    /// The content of the room's `(event_type, "")` state as the user sees
    /// it: the stripped state for an invite or knock.
    async fn content(
        &mut self,
        state: &AppState,
        user_id: &str,
        room: &Candidate<'_>,
        event_type: &str,
        current: i64,
    ) -> Result<Option<Value>, SyncApiError> {
        let key = (room.room_id.to_owned(), event_type.to_owned());
        if let Some(content) = self.state.get(&key) {
            return Ok(content.clone());
        }
        let content = if room.outside().is_some() {
            let stripped = self.stripped(state, user_id, room, current).await?;
            stripped
                .iter()
                .find(|e| e["type"] == event_type && e["state_key"] == "")
                .and_then(|e| e.get("content").cloned())
        } else {
            let row = state.storage.state_event_at(room.room_id, event_type, "", room.upto(current)).await?;
            row.and_then(|row| row.pdu.get("content").cloned())
        };
        self.state.insert(key, content.clone());
        Ok(content)
    }
}

/// The user's DM rooms (`m.direct`), each room's tags (`m.tag`) and
/// the users they ignore (`m.ignored_user_list`).
struct AccountFacts {
    dms: BTreeSet<String>,
    tags: HashMap<String, BTreeSet<String>>,
    ignored: BTreeSet<String>,
}

async fn account_facts(state: &AppState, user_id: &str, current: SyncToken) -> Result<AccountFacts, SyncApiError> {
    let mut facts = AccountFacts { dms: BTreeSet::new(), tags: HashMap::new(), ignored: BTreeSet::new() };
    for row in state.storage.account_data_between(user_id, 0, current.account_data).await? {
        match (row.room_id.is_empty(), row.data_type.as_str()) {
            (true, "m.direct") => {
                let rooms = row.content.as_object().into_iter().flat_map(|m| m.values()).filter_map(Value::as_array);
                facts.dms.extend(rooms.flatten().filter_map(Value::as_str).map(str::to_owned));
            }
            (true, "m.ignored_user_list") => facts.ignored = ignored_users_in(&row.content),
            (false, "m.tag") => {
                let tags = row.content.get("tags").and_then(Value::as_object).map(|t| t.keys().cloned().collect());
                facts.tags.insert(row.room_id, tags.unwrap_or_default());
            }
            _ => {}
        }
    }
    Ok(facts)
}

/// Whether `room` passes a list's filters.
async fn passes(
    state: &AppState,
    user_id: &str,
    room: &Candidate<'_>,
    filters: &ListFilters,
    facts: &mut Facts,
    account: &AccountFacts,
    current: i64,
) -> Result<bool, SyncApiError> {
    if let Some(is_dm) = filters.is_dm
        && account.dms.contains(room.room_id) != is_dm
    {
        return Ok(false);
    }
    if let Some(is_invite) = filters.is_invite
        && (room.membership == "invite") != is_invite
    {
        return Ok(false);
    }
    if let Some(is_encrypted) = filters.is_encrypted {
        let encrypted = facts.content(state, user_id, room, "m.room.encryption", current).await?.is_some();
        if encrypted != is_encrypted {
            return Ok(false);
        }
    }
    if filters.room_types.is_some() || filters.not_room_types.is_some() {
        let create = facts.content(state, user_id, room, "m.room.create", current).await?;
        let room_type = create.as_ref().and_then(|c| c.get("type")).and_then(Value::as_str).map(str::to_owned);
        if filters.not_room_types.as_ref().is_some_and(|types| types.contains(&room_type))
            || filters.room_types.as_ref().is_some_and(|types| !types.contains(&room_type))
        {
            return Ok(false);
        }
    }
    let tags = account.tags.get(room.room_id);
    let tagged = |wanted: &Vec<String>| tags.is_some_and(|tags| wanted.iter().any(|t| tags.contains(t)));
    if filters.not_tags.as_ref().is_some_and(tagged) || filters.tags.as_ref().is_some_and(|t| !tagged(t)) {
        return Ok(false);
    }
    if let Some(children) = &filters.space_children
        && !children.contains(room.room_id)
    {
        return Ok(false);
    }
    if let Some(part) = &filters.room_name_like {
        let content = facts.content(state, user_id, room, "m.room.name", current).await?;
        let name = content.as_ref().and_then(|c| c.get("name")).and_then(Value::as_str).unwrap_or_default();
        if !name.to_lowercase().contains(&part.to_lowercase()) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The rooms the `spaces` filter lets through: the current `m.space.child`
/// entries (with a `via`, as the spec counts a child) of the listed spaces
/// the user is joined to. `None` without the filter.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#mspacechild>
async fn space_children(
    state: &AppState,
    rooms: &[Candidate<'_>],
    filters: &ListFilters,
    current: i64,
) -> Result<Option<HashSet<String>>, SyncApiError> {
    let Some(spaces) = &filters.spaces else { return Ok(None) };
    let mut children = HashSet::new();
    for space in rooms.iter().filter(|r| r.membership == "join" && spaces.iter().any(|s| s == r.room_id)) {
        for row in state.storage.space_children_at(space.room_id, current).await? {
            if row.pdu["content"]["via"].as_array().is_some_and(|via| !via.is_empty()) {
                children.extend(row.pdu["state_key"].as_str().map(str::to_owned));
            }
        }
    }
    Ok(Some(children))
}

/// Whether a leave in `room` at `pos` was someone else's doing (a kick).
async fn kicked(state: &AppState, room_id: &str, user_id: &str, pos: i64) -> Result<bool, SyncApiError> {
    let member = state.storage.state_event_at(room_id, MEMBER, user_id, pos).await?;
    Ok(member.is_some_and(|row| row.pdu.get("sender").and_then(Value::as_str) != Some(user_id)))
}

/// The answer at stream positions `current`, the connection's state after
/// it, and whether it carries nothing new.
async fn compute(
    state: &AppState,
    request: &SlidingRequest,
    previous: Option<&ConnState>,
    current: SyncToken,
) -> Result<(Value, ConnState, bool), SyncApiError> {
    let storage = &state.storage;
    let user_id = request.identity.user_id.as_str();
    let since = previous.map(|p| p.token.min(current));
    let sent = previous.map(|p| &p.rooms);

    let mut by_room: BTreeMap<String, Vec<MembershipChange>> = BTreeMap::new();
    for change in storage.membership_changes(user_id, None, current.events).await? {
        by_room.entry(change.room_id.clone()).or_default().push(change);
    }
    let activity = storage.room_activity(user_id, current.events).await?;

    // The server's room list: rooms the user is in, invited to or knocked
    // on, was kicked or banned from after joining, and rooms they left
    // that this connection was sent; most recently active first.
    let mut rooms: Vec<Candidate> = Vec::new();
    for (room_id, changes) in &by_room {
        let last = changes.last().expect("grouped changes are never empty");
        let ever_joined = changes.iter().any(|c| c.membership == "join");
        let listed = match last.membership.as_str() {
            "join" | "invite" | "knock" => true,
            "ban" => ever_joined,
            "leave" => {
                sent.is_some_and(|s| s.contains_key(room_id))
                    || (ever_joined && kicked(state, room_id, user_id, last.pos).await?)
            }
            _ => false,
        };
        if !listed {
            continue;
        }
        let recency = match last.membership.as_str() {
            "join" => activity.get(room_id).copied().unwrap_or(last.pos).max(last.pos),
            _ => last.pos,
        };
        rooms.push(Candidate { room_id, changes, membership: &last.membership, membership_pos: last.pos, recency });
    }
    rooms.sort_by(|a, b| b.recency.cmp(&a.recency).then_with(|| a.room_id.cmp(b.room_id)));

    let mut facts = Facts::default();
    let account = account_facts(state, user_id, current).await?;

    // Which rooms the lists and subscriptions match, each with its combined config.
    let mut matched: BTreeMap<&str, Match> = BTreeMap::new();
    let mut counts = BTreeMap::new();
    for list in &request.lists {
        let mut index = 0;
        let space_children = space_children(state, &rooms, &list.filters, current.events).await?;
        let filters = ListFilters { space_children, ..list.filters.clone() };
        for room in &rooms {
            if !passes(state, user_id, room, &filters, &mut facts, &account, current.events).await? {
                continue;
            }
            if list.covers(index) {
                let entry = matched.entry(room.room_id).or_default();
                entry.config.merge(&list.config);
                entry.lists.push(list.name.clone());
            }
            index += 1;
        }
        counts.insert(list.name.clone(), index);
    }
    for (room_id, config) in &request.subscriptions {
        // Only rooms the user is in, invited to or knocked on, or was in.
        let Some(room) = rooms.iter().find(|r| r.room_id == room_id.as_str()) else {
            continue;
        };
        if room.membership == "leave" && !room.changes.iter().any(|c| c.membership == "join") {
            continue;
        }
        let entry = matched.entry(room.room_id).or_default();
        entry.config.merge(config);
        entry.subscribed = true;
    }

    let mut next = ConnState {
        token: current,
        rooms: sent.cloned().unwrap_or_default(),
        subscriptions: request.subscriptions.clone(),
        extensions: request.extensions.clone(),
        counts: BTreeMap::new(),
    };
    let mut out_rooms = Map::new();
    let mut initial_rooms = BTreeSet::new();
    for room in &rooms {
        let Some(Match { config, .. }) = matched.get(room.room_id) else {
            continue;
        };
        let before = sent.and_then(|s| s.get(room.room_id));
        // Sent whole when new to the connection, when asked for more, and
        // when the user moved between outside (invite, knock) and inside.
        let initial = before.is_none_or(|b| {
            config.expands(&b.config)
                || (b.membership != room.membership
                    && (matches!(b.membership.as_str(), "invite" | "knock") || room.outside().is_some()))
        });
        next.rooms.insert(
            room.room_id.to_owned(),
            SentRoom { at: current.events, membership: room.membership.to_owned(), config: config.clone() },
        );
        if !initial && before.is_some_and(|b| room.recency <= b.at) {
            continue;
        }
        if initial {
            initial_rooms.insert(room.room_id.to_owned());
        }
        let after = if initial { None } else { before.map(|b| b.at) };
        let entry =
            room_entry(state, &request.identity, room, config, after, since, current, &mut facts, &account).await?;
        out_rooms.insert(room.room_id.to_owned(), entry);
    }

    let (extensions, to_device_pos, extensions_empty) =
        extensions(state, request, &matched, &rooms, &initial_rooms, since, current).await?;
    next.token.to_device = to_device_pos;
    let lists: Map<String, Value> =
        counts.iter().map(|(name, count)| (name.clone(), json!({ "count": count }))).collect();
    let empty = out_rooms.is_empty() && extensions_empty && previous.is_some_and(|p| p.counts == counts);
    next.counts = counts;
    let body = json!({ "lists": lists, "rooms": out_rooms, "extensions": extensions });
    Ok((body, next, empty))
}

/// One room of the answer: everything when `after` is `None` (the
/// connection has not got the room, or asks for more of it), else what
/// changed since event position `after`.
#[allow(clippy::too_many_arguments)]
async fn room_entry(
    state: &AppState,
    identity: &Identity,
    room: &Candidate<'_>,
    config: &RoomConfig,
    after: Option<i64>,
    since: Option<SyncToken>,
    current: SyncToken,
    facts: &mut Facts,
    account: &AccountFacts,
) -> Result<Value, SyncApiError> {
    let storage = &state.storage;
    let user_id = identity.user_id.as_str();
    let mut entry = Map::new();
    entry.insert("membership".to_owned(), json!(room.membership));
    if after.is_none() {
        entry.insert("initial".to_owned(), json!(true));
        if account.dms.contains(room.room_id) {
            entry.insert("is_dm".to_owned(), json!(true));
        }
    }
    if let Some(outside) = room.outside() {
        // The user is not in the room: only what the invite or knock shows.
        let section = match outside {
            Outside::Invite => "invite_state",
            Outside::Knock => "knock_state",
        };
        entry.insert(section.to_owned(), json!(facts.stripped(state, user_id, room, current.events).await?));
        entry.insert("bump_stamp".to_owned(), json!(room.membership_pos));
        return Ok(Value::Object(entry));
    }
    if !room.changes.iter().any(|c| c.membership == "join") {
        // A rejected invite or knock: the user never saw the room's insides.
        entry.insert("bump_stamp".to_owned(), json!(room.membership_pos));
        return Ok(Value::Object(entry));
    }

    let upto = room.upto(current.events);
    let Timeline { events, limited, before, ranges } = sync::latest_timeline(
        storage,
        room.room_id,
        room.changes,
        after.unwrap_or(0),
        upto,
        config.timeline_limit,
        |row| !from_ignored(&account.ignored, row),
    )
    .await?;

    // State: all the room's asked-for state when sent whole, else the
    // asked-for entries that changed (a stub for a removed one).
    let lazy = config.lazy_members();
    let mut members: BTreeSet<String> = BTreeSet::new();
    if lazy {
        for event in &events {
            members.extend(event.pdu.get("sender").and_then(Value::as_str).map(str::to_owned));
            if event.pdu.get("type").and_then(Value::as_str) == Some(MEMBER) {
                members.extend(event.pdu.get("state_key").and_then(Value::as_str).map(str::to_owned));
            }
        }
    }
    let key_of = |row: &EventRow| {
        let text = |key: &str| row.pdu.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        (text("type"), text("state_key"))
    };
    let mut state_rows = Vec::new();
    // Stubs for removed entries, after the events.
    let mut removed = Vec::new();
    let mut changed_keys = BTreeSet::new();
    match after {
        None => {
            for row in storage.state_at(room.room_id, upto).await? {
                let (event_type, state_key) = key_of(&row);
                if config.wants(&event_type, &state_key, user_id)
                    || (event_type == MEMBER && members.contains(&state_key))
                {
                    state_rows.push(row);
                }
            }
        }
        Some(after) => {
            let changed = storage.state_changed_between(room.room_id, after, upto).await?;
            let mut keys: BTreeSet<(String, String)> = changed
                .iter()
                .filter(|(t, k)| {
                    // Unless the timeline has a gap, every member change
                    // goes out, so that a client may keep its member list.
                    config.wants(t, k, user_id) || (lazy && t == MEMBER && !limited)
                })
                .cloned()
                .collect();
            keys.extend(members.iter().map(|m| (MEMBER.to_owned(), m.clone())));
            for (event_type, state_key) in keys {
                match storage.state_event_at(room.room_id, &event_type, &state_key, upto).await? {
                    Some(row) => state_rows.push(row),
                    None if changed.contains(&(event_type.clone(), state_key.clone())) => {
                        removed.push(json!({ "type": event_type, "state_key": state_key }));
                    }
                    None => {}
                }
            }
            changed_keys = changed;
        }
    }

    // Name, avatar and heroes: when sent whole, or when they changed.
    let changed = |event_type: &str| after.is_none() || changed_keys.contains(&(event_type.to_owned(), String::new()));
    let name = facts.content(state, user_id, room, "m.room.name", current.events).await?;
    let name = name.as_ref().and_then(|c| c.get("name")).and_then(Value::as_str).filter(|n| !n.is_empty());
    if changed("m.room.name") {
        match name {
            Some(name) => entry.insert("name".to_owned(), json!(name)),
            None if after.is_some() => entry.insert("name".to_owned(), Value::Null),
            None => None,
        };
    }
    if changed("m.room.avatar") {
        let avatar = facts.content(state, user_id, room, "m.room.avatar", current.events).await?;
        match avatar.as_ref().and_then(|c| c.get("url")).and_then(Value::as_str) {
            Some(url) => entry.insert("avatar".to_owned(), json!(url)),
            None if after.is_some() => entry.insert("avatar".to_owned(), Value::Null),
            None => None,
        };
    }
    let members_changed = after.is_none() || changed_keys.iter().any(|(t, _)| t == MEMBER);
    if name.is_none() && members_changed {
        let heroes: Vec<Value> = storage
            .heroes(room.room_id, user_id, HEROES)
            .await?
            .into_iter()
            .map(|hero| {
                let mut out = json!({ "user_id": hero.user_id });
                for key in ["displayname", "avatar_url"] {
                    if let Some(value) = hero.content.get(key).filter(|v| v.is_string()) {
                        out[key] = value.clone();
                    }
                }
                out
            })
            .collect();
        entry.insert("heroes".to_owned(), json!(heroes));
    }

    // Events after the connection's last answer are new to the client.
    let num_live = since.map_or(0, |s| events.iter().filter(|e| e.pos > s.events).count());
    let viewer = Viewer { identity, room_id: room.room_id, ranges: &ranges, with_room_id: false };
    entry.insert("timeline".to_owned(), json!(client_events(state, &viewer, &events).await?));
    let mut required_state = client_events(state, &viewer, &state_rows).await?;
    required_state.extend(removed);
    entry.insert("required_state".to_owned(), json!(required_state));
    entry.insert("prev_batch".to_owned(), json!(StreamToken(before).to_string()));
    entry.insert("limited".to_owned(), json!(limited));
    entry.insert("num_live".to_owned(), json!(num_live));
    let bump_stamp = match room.membership {
        "join" => storage.bump_stamp(room.room_id, upto).await?.unwrap_or(room.recency),
        _ => room.membership_pos,
    };
    entry.insert("bump_stamp".to_owned(), json!(bump_stamp));
    if room.membership == "join" {
        let (joined, invited) = storage.member_counts(room.room_id).await?;
        entry.insert("joined_count".to_owned(), json!(joined));
        entry.insert("invited_count".to_owned(), json!(invited));
        let (unread, _) = storage.counts(user_id, room.room_id).await?;
        entry.insert("notification_count".to_owned(), unread["notification_count"].clone());
        entry.insert("highlight_count".to_owned(), unread["highlight_count"].clone());
    }
    Ok(Value::Object(entry))
}

/// The extensions' answers, the to-device position delivered up to, and
/// whether they carry nothing new. A room sent whole gets its receipts,
/// typing and account data whole too.
async fn extensions(
    state: &AppState,
    request: &SlidingRequest,
    matched: &BTreeMap<&str, Match>,
    rooms: &[Candidate<'_>],
    initial_rooms: &BTreeSet<String>,
    since: Option<SyncToken>,
    current: SyncToken,
) -> Result<(Value, i64, bool), SyncApiError> {
    let storage = &state.storage;
    let identity = &request.identity;
    let user_id = identity.user_id.as_str();
    let enabled = &request.extensions;
    let mut out = Map::new();
    let mut empty = true;
    let mut to_device_pos = since.map_or(0, |s| s.to_device);

    if enabled.to_device {
        let after = request.to_device_since.or(since.map(|s| s.to_device)).unwrap_or(0).min(current.to_device);
        let from = SyncToken { to_device: after, ..SyncToken::default() };
        let (events, next_batch) = sync::to_device(state, identity, Some(from), current).await?;
        empty &= events.is_empty();
        to_device_pos = next_batch.to_device;
        out.insert("to_device".to_owned(), json!({ "next_batch": to_device_pos.to_string(), "events": events }));
    }
    if enabled.e2ee {
        let (changed, left) = match since {
            Some(since) => (
                storage.device_lists_changed(user_id, since.device_lists, current.device_lists).await?,
                storage.device_lists_left(user_id, since.events, current.events).await?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        empty &= changed.is_empty() && left.is_empty();
        let (one_time_key_counts, unused_fallback_key_types) = storage.key_counts(user_id, &identity.device_id).await?;
        out.insert(
            "e2ee".to_owned(),
            json!({
                "device_lists": { "changed": changed, "left": left },
                "device_one_time_keys_count": one_time_key_counts,
                "device_unused_fallback_key_types": unused_fallback_key_types,
            }),
        );
    }

    // The joined rooms an extension covers.
    let covered = |scope: &Scope| -> BTreeSet<&str> {
        matched
            .iter()
            .filter(|(room_id, found)| {
                scope.covers(&found.lists, found.subscribed)
                    && rooms.iter().any(|r| r.room_id == **room_id && r.membership == "join")
            })
            .map(|(room_id, _)| *room_id)
            .collect()
    };
    let (changes, whole) = if enabled.account_data.enabled || enabled.receipts.enabled {
        let changes = sync::changes(state, user_id, &Filter::default(), since, current).await?;
        let whole = match since {
            Some(_) if !initial_rooms.is_empty() => {
                Some(sync::changes(state, user_id, &Filter::default(), None, current).await?)
            }
            _ => None,
        };
        (Some(changes), whole)
    } else {
        (None, None)
    };
    // Per room: the whole data for a room sent whole, else what changed.
    let source = |room_id: &str| {
        if initial_rooms.contains(room_id) { whole.as_ref().or(changes.as_ref()) } else { changes.as_ref() }
    };

    if enabled.account_data.enabled {
        let global = changes.as_ref().map(|c| c.global_account_data.clone()).unwrap_or_default();
        let mut by_room = Map::new();
        for room_id in covered(&enabled.account_data) {
            if let Some(events) = source(room_id).and_then(|c| c.room_account_data.get(room_id)) {
                by_room.insert(room_id.to_owned(), json!(events));
            }
        }
        empty &= global.is_empty() && by_room.is_empty();
        out.insert("account_data".to_owned(), json!({ "global": global, "rooms": by_room }));
    }
    if enabled.receipts.enabled {
        let mut by_room = Map::new();
        for room_id in covered(&enabled.receipts) {
            if let Some(content) = source(room_id).and_then(|c| c.receipts.get(room_id)) {
                by_room.insert(room_id.to_owned(), json!({ "type": "m.receipt", "content": content }));
            }
        }
        empty &= by_room.is_empty();
        out.insert("receipts".to_owned(), json!({ "rooms": by_room }));
    }
    if enabled.typing.enabled {
        let mut by_room = Map::new();
        for room_id in covered(&enabled.typing) {
            let after = since.filter(|_| !initial_rooms.contains(room_id)).map(|s| s.typing);
            if let Some(event) = sync::typing_event(state, room_id, after, current.typing) {
                by_room.insert(room_id.to_owned(), event);
            }
        }
        empty &= by_room.is_empty();
        out.insert("typing".to_owned(), json!({ "rooms": by_room }));
    }
    Ok((Value::Object(out), to_device_pos, empty))
}
