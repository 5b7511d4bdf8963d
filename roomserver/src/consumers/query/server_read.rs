//! What other servers read of rooms over federation (`/event`, `/state`,
//! `/state_ids`, `/event_auth`, `/backfill`, `/get_missing_events`),
//! limited to what the asking server may see: the history visibility and
//! its users' memberships in the state at each event, judged by
//! `myelin_visibility::server_may_see` and nothing else.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-events>

use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};

use myelin_storage::Db;
use myelin_visibility::{HistoryVisibility, server_may_see};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UserId};
use serde_json::Value;

use crate::api::{MAX_SERVER_READ_EVENTS, QueryOk, Reader, ServerRead, StoredEvent};
use crate::error::RequestError;
use crate::events::chain::auth_chain;
use crate::events::pdu::Pdu;
use crate::storage::{EventStatus, Tx, resolve_snapshot};

pub(super) async fn answer(db: &Db, server: &ServerName, read: ServerRead) -> Result<QueryOk, RequestError> {
    let mut tx = Tx::read(db).await?;
    match read {
        ServerRead::Event { event_id } => {
            let event = Loaded::load(&mut tx, &event_id).await?.ok_or_else(|| not_found(&event_id))?;
            let mut view = ServerView::new(&mut tx, Viewer::Server(server), &event.room_id).await?;
            view.check(&mut tx, &event).await?;
            Ok(QueryOk::ServerEvents { events: vec![event.stored()], auth_chain: Vec::new() })
        }
        ServerRead::State { room_id, event_id } => {
            let event = in_room(&mut tx, &room_id, &event_id).await?;
            // The state before an outlier is not known here.
            if event.status == EventStatus::Outlier {
                return Err(not_found(&event_id));
            }
            ServerView::new(&mut tx, Viewer::Server(server), &room_id).await?.check(&mut tx, &event).await?;
            let mut roots = vec![event.pdu];
            let mut state = Vec::new();
            for (_, id) in resolve_snapshot(&mut tx, event.state_before).await? {
                let json = tx.event_pdu(&id).await?.ok_or_else(|| RequestError::Internal(format!("{id} missing")))?;
                let id = OwnedEventId::try_from(id).map_err(|e| RequestError::Internal(e.to_string()))?;
                roots.push(Pdu::parse(id.clone(), &json)?);
                state.push(StoredEvent { event_id: id, room_id: room_id.clone(), pdu: serde_json::from_str(&json)? });
            }
            let auth_chain = stored(&room_id, auth_chain(&mut tx, &roots).await?);
            Ok(QueryOk::ServerEvents { events: state, auth_chain })
        }
        ServerRead::AuthChain { room_id, event_id } => {
            let event = in_room(&mut tx, &room_id, &event_id).await?;
            ServerView::new(&mut tx, Viewer::Server(server), &room_id).await?.check(&mut tx, &event).await?;
            let events = stored(&room_id, auth_chain(&mut tx, &[event.pdu]).await?);
            Ok(QueryOk::ServerEvents { events, auth_chain: Vec::new() })
        }
        ServerRead::Backfill { room_id, from, limit } => backfill(&mut tx, server, &room_id, &from, limit).await,
        ServerRead::Missing { room_id, earliest, latest, limit, min_depth } => {
            missing(&mut tx, server, &room_id, &earliest, &latest, limit, min_depth).await
        }
    }
}

/// One event as a local user may see it (see [`crate::api::QueryRequest::UserEvent`]).
pub(super) async fn user_event(
    db: &Db,
    user_id: &UserId,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<QueryOk, RequestError> {
    let mut tx = Tx::read(db).await?;
    let event = in_room(&mut tx, room_id, event_id).await?;
    ServerView::new(&mut tx, Viewer::User(user_id), room_id).await?.check(&mut tx, &event).await?;
    Ok(QueryOk::ServerEvents { events: vec![event.stored()], auth_chain: Vec::new() })
}

/// How many candidates `/timestamp_to_event` judges per read.
const TS_BATCH: i64 = 50;
/// How many candidates it judges at most before answering that none is visible.
const TS_MAX_CANDIDATES: i64 = 1000;

/// The visible event nearest `ts` in the direction asked.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>
pub(super) async fn timestamp_to_event(
    db: &Db,
    reader: &Reader,
    room_id: &RoomId,
    ts: i64,
    forward: bool,
) -> Result<QueryOk, RequestError> {
    let mut tx = Tx::read(db).await?;
    let viewer = match reader {
        Reader::User(user) => Viewer::User(user),
        Reader::Server(server) => Viewer::Server(server),
    };
    let mut view = ServerView::new(&mut tx, viewer, room_id).await?;
    let mut skip = 0;
    while skip < TS_MAX_CANDIDATES {
        let candidates = tx.events_near_ts(room_id.as_str(), ts, forward, skip, TS_BATCH).await?;
        for (event_id, origin_server_ts) in &candidates {
            let event_id =
                OwnedEventId::try_from(event_id.as_str()).map_err(|e| RequestError::Internal(e.to_string()))?;
            let Some(event) = timeline_event(&mut tx, room_id, &event_id).await? else { continue };
            if view.may_see(&mut tx, &event).await? {
                return Ok(QueryOk::EventAt { event_id, origin_server_ts: *origin_server_ts });
            }
        }
        if (candidates.len() as i64) < TS_BATCH {
            break;
        }
        skip += TS_BATCH;
    }
    let direction = if forward { "forward" } else { "backward" };
    Err(RequestError::NotFound(format!("No event found from {ts} in the {direction} direction")))
}

/// `from` and the events before them, deepest first, leaving out what
/// `server` may not see. At least one of `from` must be visible to it.
async fn backfill(
    tx: &mut Tx,
    server: &ServerName,
    room_id: &RoomId,
    from: &[OwnedEventId],
    limit: u32,
) -> Result<QueryOk, RequestError> {
    let limit = limit.min(MAX_SERVER_READ_EVENTS) as usize;
    let mut view = ServerView::new(tx, Viewer::Server(server), room_id).await?;
    let mut seen = HashSet::new();
    let mut loaded = HashMap::new();
    let mut queue = BinaryHeap::new();
    let mut any_visible = false;
    for event_id in from {
        if !seen.insert(event_id.clone()) {
            continue;
        }
        let Some(event) = timeline_event(tx, room_id, event_id).await? else { continue };
        any_visible |= view.may_see(tx, &event).await?;
        queue.push((event.depth, event_id.clone()));
        loaded.insert(event_id.clone(), event);
    }
    if loaded.is_empty() {
        return Err(RequestError::NotFound(format!("none of the events to backfill from are in {room_id}")));
    }
    if !any_visible {
        return Err(RequestError::Forbidden(format!("{server} may not see the events to backfill from")));
    }
    let mut events = Vec::new();
    while events.len() < limit {
        let Some((_, event_id)) = queue.pop() else { break };
        let event = loaded.remove(&event_id).expect("queued events are loaded");
        for prev in &event.pdu.prev_events {
            if seen.insert(prev.clone())
                && let Some(prev_event) = timeline_event(tx, room_id, prev).await?
            {
                queue.push((prev_event.depth, prev.clone()));
                loaded.insert(prev.clone(), prev_event);
            }
        }
        if view.may_see(tx, &event).await? {
            events.push(event.stored());
        }
    }
    Ok(QueryOk::ServerEvents { events, auth_chain: Vec::new() })
}

/// A breadth-first walk back from `latest` (excluded) that stops at
/// `earliest`, below `min_depth` and at `limit`; oldest first. Only a
/// server in the room (or anyone in a world-readable room) may ask.
async fn missing(
    tx: &mut Tx,
    server: &ServerName,
    room_id: &RoomId,
    earliest: &[OwnedEventId],
    latest: &[OwnedEventId],
    limit: u32,
    min_depth: i64,
) -> Result<QueryOk, RequestError> {
    let limit = limit.min(MAX_SERVER_READ_EVENTS) as usize;
    let mut view = ServerView::new(tx, Viewer::Server(server), room_id).await?;
    if !view.in_room(tx).await? {
        return Err(RequestError::Forbidden(format!("{server} is not in {room_id}")));
    }
    let mut seen: HashSet<OwnedEventId> = earliest.iter().chain(latest).cloned().collect();
    let mut queue = VecDeque::new();
    for event_id in latest {
        if let Some(event) = timeline_event(tx, room_id, event_id).await? {
            queue.extend(event.pdu.prev_events);
        }
    }
    let mut events = Vec::new();
    while events.len() < limit {
        let Some(event_id) = queue.pop_front() else { break };
        if !seen.insert(event_id.clone()) {
            continue;
        }
        let Some(event) = timeline_event(tx, room_id, &event_id).await? else { continue };
        if event.depth < min_depth {
            continue;
        }
        queue.extend(event.pdu.prev_events.iter().cloned());
        if view.may_see(tx, &event).await? {
            events.push(event);
        }
    }
    events.sort_by_key(|event| event.depth);
    Ok(QueryOk::ServerEvents { events: events.into_iter().map(Loaded::stored).collect(), auth_chain: Vec::new() })
}

/// A stored event with what deciding its visibility needs.
struct Loaded {
    event_id: OwnedEventId,
    room_id: OwnedRoomId,
    status: EventStatus,
    state_before: Option<i64>,
    depth: i64,
    pdu: Pdu,
    json: Value,
}

impl Loaded {
    async fn load(tx: &mut Tx, event_id: &EventId) -> Result<Option<Self>, RequestError> {
        let (Some(row), Some(known)) = (tx.event(event_id.as_str()).await?, tx.known_event(event_id.as_str()).await?)
        else {
            return Ok(None);
        };
        let json: Value = serde_json::from_str(&row.pdu)?;
        Ok(Some(Self {
            event_id: event_id.to_owned(),
            room_id: OwnedRoomId::try_from(row.room_id).map_err(|e| RequestError::Internal(e.to_string()))?,
            status: known.status,
            state_before: known.state_before,
            depth: json.get("depth").and_then(Value::as_i64).unwrap_or(0),
            pdu: Pdu::parse(event_id.to_owned(), &row.pdu)?,
            json,
        }))
    }

    fn stored(self) -> StoredEvent {
        StoredEvent { event_id: self.event_id, room_id: self.room_id, pdu: self.json }
    }
}

/// The event, which must be in `room_id`: another room's event is as
/// unknown here as a missing one.
async fn in_room(tx: &mut Tx, room_id: &RoomId, event_id: &EventId) -> Result<Loaded, RequestError> {
    Loaded::load(tx, event_id).await?.filter(|event| event.room_id == room_id).ok_or_else(|| not_found(event_id))
}

/// An event of the room's graph (not an outlier), if stored.
async fn timeline_event(tx: &mut Tx, room_id: &RoomId, event_id: &EventId) -> Result<Option<Loaded>, RequestError> {
    Ok(Loaded::load(tx, event_id)
        .await?
        .filter(|event| event.room_id == room_id && event.status != EventStatus::Outlier))
}

fn stored(room_id: &RoomId, events: Vec<(OwnedEventId, Value)>) -> Vec<StoredEvent> {
    events.into_iter().map(|(event_id, pdu)| StoredEvent { event_id, room_id: room_id.to_owned(), pdu }).collect()
}

fn not_found(event_id: &EventId) -> RequestError {
    RequestError::NotFound(format!("unknown event {event_id}"))
}

/// Who reads: another server (for its users), or one user of this server
/// (reports, `/timestamp_to_event`), judged by the same rule.
#[derive(Clone, Copy)]
enum Viewer<'s> {
    Server(&'s ServerName),
    User(&'s UserId),
}

impl std::fmt::Display for Viewer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Server(server) => write!(f, "{server}"),
            Self::User(user) => write!(f, "{user}"),
        }
    }
}

/// One viewer's view of one room, with what each state snapshot says about
/// it cached: the events of a request share few snapshots.
struct ServerView<'s> {
    server: Viewer<'s>,
    joined_now: bool,
    current_snapshot: Option<i64>,
    /// Per snapshot: the history visibility and the memberships of the
    /// server's users.
    snapshots: HashMap<Option<i64>, (HistoryVisibility, HashMap<String, String>)>,
}

impl<'s> ServerView<'s> {
    async fn new(tx: &mut Tx, server: Viewer<'s>, room_id: &RoomId) -> Result<Self, RequestError> {
        let room = tx
            .room(room_id.as_str())
            .await?
            .ok_or_else(|| RequestError::NotFound(format!("unknown room {room_id}")))?;
        let joined_now = match server {
            Viewer::Server(name) => {
                let joined = tx.joined_users_of(room_id.as_str(), name.as_str()).await?;
                joined.iter().any(|user| UserId::parse(user).is_ok_and(|user| user.server_name() == name))
            }
            Viewer::User(user) => tx
                .membership(room_id.as_str(), user.as_str())
                .await?
                .is_some_and(|(membership, _)| membership == "join"),
        };
        Ok(Self { server, joined_now, current_snapshot: room.current_snapshot, snapshots: HashMap::new() })
    }

    fn is_ours(&self, user_id: &str) -> bool {
        match self.server {
            Viewer::Server(server) => UserId::parse(user_id).is_ok_and(|user| user.server_name() == server),
            Viewer::User(user) => user.as_str() == user_id,
        }
    }

    /// The server has a user in the room now, or the room is world-readable.
    async fn in_room(&mut self, tx: &mut Tx) -> Result<bool, RequestError> {
        let snapshot = self.current_snapshot;
        Ok(self.joined_now || self.at(tx, snapshot).await?.0 == HistoryVisibility::WorldReadable)
    }

    async fn check(&mut self, tx: &mut Tx, event: &Loaded) -> Result<(), RequestError> {
        if self.may_see(tx, event).await? {
            Ok(())
        } else {
            Err(RequestError::Forbidden(format!("{} may not see {}", self.server, event.event_id)))
        }
    }

    /// Whether the server may see `event`, judged on the state after it
    /// (the event's own membership counts; a visibility change counts with
    /// the more permissive of its old and new value, as for users).
    async fn may_see(&mut self, tx: &mut Tx, event: &Loaded) -> Result<bool, RequestError> {
        // An outlier has no state of its own here: the current state judges it.
        let snapshot = if event.status == EventStatus::Outlier { self.current_snapshot } else { event.state_before };
        let (mut visibility, mut members) = self.at(tx, snapshot).await?.clone();
        if let Some(key) = event.pdu.state_key.as_deref() {
            match event.pdu.event_type.to_string().as_str() {
                "m.room.history_visibility" if key.is_empty() => {
                    visibility = visibility.max(HistoryVisibility::from_content(event.json.get("content")));
                }
                "m.room.member" if self.is_ours(key) => {
                    let membership = event.json.pointer("/content/membership").and_then(Value::as_str);
                    members.insert(key.to_owned(), membership.unwrap_or_default().to_owned());
                }
                _ => {}
            }
        }
        Ok(server_may_see(visibility, members.values().map(String::as_str), self.joined_now))
    }

    async fn at(
        &mut self,
        tx: &mut Tx,
        snapshot: Option<i64>,
    ) -> Result<&(HistoryVisibility, HashMap<String, String>), RequestError> {
        if !self.snapshots.contains_key(&snapshot) {
            let state = resolve_snapshot(tx, snapshot).await?;
            let content = |json: Option<String>| -> Result<Option<Value>, RequestError> {
                Ok(match json {
                    Some(json) => serde_json::from_str::<Value>(&json)?.get("content").cloned(),
                    None => None,
                })
            };
            let visibility = match state.get(&("m.room.history_visibility".to_owned(), String::new())) {
                Some(id) => HistoryVisibility::from_content(content(tx.event_pdu(id).await?)?.as_ref()),
                None => HistoryVisibility::Shared,
            };
            let mut members = HashMap::new();
            for ((kind, user), id) in &state {
                if kind == "m.room.member" && self.is_ours(user) {
                    let content = content(tx.event_pdu(id).await?)?;
                    let membership = content.as_ref().and_then(|c| c.get("membership")).and_then(Value::as_str);
                    members.insert(user.clone(), membership.unwrap_or_default().to_owned());
                }
            }
            self.snapshots.insert(snapshot, (visibility, members));
        }
        Ok(&self.snapshots[&snapshot])
    }
}
