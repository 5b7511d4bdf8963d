//! The checks on receipt of a PDU that need the room: auth against its auth
//! events, against the state before it and against the current state, and
//! what an accepted PDU does to the room (state snapshots, forward
//! extremities, current state by state resolution when it is on a fork).
//! Runs inside the request's transaction, after [`super::receive`].
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#checks-performed-on-receipt-of-a-pdu>

use std::collections::{HashMap, HashSet};

use ruma::events::{StateEventType, TimelineEventType};
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::{auth_types_for_event, check_state_dependent_auth_rules, check_state_independent_auth_rules};
use ruma::{EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId};
use serde_json::Value;

use super::cover::{Cover, Position, Reach, difference};
use super::pdu::Pdu;
use super::receive::Received;
pub use super::resolve::IdState;
use super::resolve::{AuthChains, EventMap, Lookup, resolve, resolve_with};
use crate::api::{NewRoomEvent, PduKind, PduOutcome, StateDelta, StoredEvent};
use crate::error::RequestError;
use crate::storage::{EventStatus, KnownEvent, NewEvent, StateMap, Tx, append_state, resolve_snapshot};

/// Most forward extremities read when deciding whether an event is on a fork.
const MAX_EXTREMITIES: i64 = 1000;

/// Runs of a resolution that missed events before it reads whole auth
/// chains instead: each round loads what the run asked for with its auth
/// chain, so a second round is rare.
const RESOLVE_ROUNDS: usize = 4;

/// Why a PDU is rejected, and whether to remember it: a rejection for
/// something the PDU itself says is permanent, one for something this
/// server could not find is not.
struct Reject {
    reason: String,
    remember: bool,
}

impl Reject {
    fn permanent(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), remember: true }
    }

    fn for_now(reason: impl Into<String>) -> Self {
        Self { reason: reason.into(), remember: false }
    }
}

/// What the pipeline knows of a stored or rejected event besides its PDU.
#[derive(Clone)]
struct Meta {
    /// `None`: rejected.
    status: Option<EventStatus>,
    state_before: Option<i64>,
    state_after: Option<i64>,
}

/// The state before or after an event, and its snapshot when one is stored.
struct State {
    map: IdState,
    snapshot: Option<i64>,
}

/// One room while its received PDUs are processed.
pub struct RemoteRoom {
    pub room_id: OwnedRoomId,
    pub version: RoomVersionId,
    rules: RoomVersionRules,
    events: EventMap,
    meta: HashMap<OwnedEventId, Meta>,
    /// The state after events held only as outliers, as another server
    /// told it (see [`RemoteRoom::take_state_after`]).
    fetched_states: HashMap<OwnedEventId, IdState>,
}

/// The result of one PDU, and its output record if it entered the timeline.
pub struct Processed {
    pub outcome: PduOutcome,
    pub output: Option<NewRoomEvent>,
}

impl Processed {
    fn outcome(outcome: PduOutcome) -> Self {
        Self { outcome, output: None }
    }
}

fn internal(error: impl std::fmt::Display) -> RequestError {
    RequestError::Internal(error.to_string())
}

/// From room version 12 the room id is the create event's reference hash.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v12/#room-ids>
fn create_id_of(room_id: &RoomId) -> Result<OwnedEventId, ruma::IdParseError> {
    EventId::parse(format!("${}", room_id.strip_sigil()))
}

fn to_id_state(map: StateMap) -> Result<IdState, RequestError> {
    map.into_iter().map(|(key, id)| Ok((key, OwnedEventId::try_from(id).map_err(internal)?))).collect()
}

impl RemoteRoom {
    /// A room this server stores, or `None`.
    pub async fn load(tx: &mut Tx, room_id: &RoomId) -> Result<Option<Self>, RequestError> {
        let Some(row) = tx.room(room_id.as_str()).await? else { return Ok(None) };
        let version = RoomVersionId::try_from(row.version.as_str()).map_err(internal)?;
        Ok(Some(Self::new(room_id.to_owned(), version)?))
    }

    /// A room with nothing loaded yet.
    pub fn new(room_id: OwnedRoomId, version: RoomVersionId) -> Result<Self, RequestError> {
        let rules = version.rules().ok_or_else(|| RequestError::UnsupportedRoomVersion(version.to_string()))?;
        Ok(Self {
            room_id,
            version,
            rules,
            events: EventMap::default(),
            meta: HashMap::new(),
            fetched_states: HashMap::new(),
        })
    }

    pub fn rules(&self) -> &RoomVersionRules {
        &self.rules
    }

    /// Load a stored or rejected event into memory; `false` if unknown.
    async fn load_event(&mut self, tx: &mut Tx, id: &EventId) -> Result<bool, RequestError> {
        if self.events.contains_key(id) {
            return Ok(true);
        }
        if let Some(known) = tx.known_event(id.as_str()).await? {
            self.keep_known(id.to_owned(), known)?;
        } else if let Some(rejected) = tx.rejected_event(id.as_str()).await? {
            let mut pdu = Pdu::parse(id.to_owned(), &rejected.pdu)?;
            pdu.rejected = true;
            self.events.insert(id.to_owned(), pdu);
            self.meta.insert(id.to_owned(), Meta { status: None, state_before: None, state_after: None });
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn keep_known(&mut self, id: OwnedEventId, known: KnownEvent) -> Result<(), RequestError> {
        let meta =
            Meta { status: Some(known.status), state_before: known.state_before, state_after: known.state_after };
        self.events.insert(id.clone(), Pdu::parse(id.clone(), &known.pdu)?);
        self.meta.insert(id, meta);
        Ok(())
    }

    /// Load the events among `ids` not in memory yet, the stored ones in
    /// batches; the ids this server knows nothing of.
    async fn load_events(&mut self, tx: &mut Tx, ids: &[OwnedEventId]) -> Result<Vec<OwnedEventId>, RequestError> {
        let wanted: Vec<&OwnedEventId> =
            ids.iter().filter(|id| !self.events.contains_key(*id)).collect::<HashSet<_>>().into_iter().collect();
        for (id, known) in tx.known_events(&wanted).await? {
            self.keep_known(id, known)?;
        }
        let mut unknown = Vec::new();
        // What is left is rejected or unknown: rare, one at a time.
        for id in wanted {
            if !self.load_event(tx, id).await? {
                unknown.push(id.clone());
            }
        }
        Ok(unknown)
    }

    /// Load `ids` and, through the auth-chain index, their whole auth
    /// chains (an id without a position alone); the ids this server knows
    /// nothing of.
    async fn load_with_auth_chains(
        &mut self,
        tx: &mut Tx,
        ids: Vec<OwnedEventId>,
        cover: &Cover,
    ) -> Result<Vec<OwnedEventId>, RequestError> {
        let room_id = self.room_id.clone();
        // Events already here came with their auth chains or were read for
        // themselves; what a run misses of the latter is loaded next round.
        let roots: Vec<&OwnedEventId> =
            ids.iter().filter(|id| !self.events.contains_key(*id)).collect::<HashSet<_>>().into_iter().collect();
        let positions = tx.chain_positions(room_id.as_str(), &roots).await?;
        let reach = cover.reach(positions.into_values(), true);
        let chains = reach.into_iter().map(|(chain, seq)| (chain, (0, seq))).collect();
        let mut wanted = ids;
        wanted.extend(tx.chain_events(room_id.as_str(), &chains).await?.into_iter().map(|(id, _)| id));
        self.load_events(tx, &wanted).await
    }

    /// Load events and their whole auth chains.
    async fn load_auth_closure(&mut self, tx: &mut Tx, roots: Vec<OwnedEventId>) -> Result<(), RequestError> {
        let mut stack = roots;
        let mut seen = HashSet::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id.clone()) || !self.load_event(tx, &id).await? {
                continue;
            }
            stack.extend(self.events[&id].auth_events.iter().cloned());
        }
        Ok(())
    }

    /// The id of the room's create event, as this room version finds it.
    async fn create_event_id(&mut self, tx: &mut Tx) -> Result<Option<OwnedEventId>, RequestError> {
        if self.rules.authorization.room_create_event_id_as_room_id {
            return Ok(Some(create_id_of(&self.room_id).map_err(internal)?));
        }
        let found = tx.current_state_event(self.room_id.as_str(), "m.room.create", "").await?;
        found.map(|(id, _)| OwnedEventId::try_from(id)).transpose().map_err(internal)
    }

    /// Run every check on one PDU and store it as its outcome says.
    pub async fn process(&mut self, tx: &mut Tx, received: Received, kind: PduKind) -> Result<Processed, RequestError> {
        let id = received.event_id.clone();
        if let Some(rejected) = tx.rejected_event(id.as_str()).await? {
            return Ok(Processed::outcome(PduOutcome::Rejected { reason: rejected.reason }));
        }
        if tx.known_event(id.as_str()).await?.is_some() {
            return Ok(Processed::outcome(PduOutcome::AlreadyKnown));
        }
        match self.check(tx, &received, kind).await? {
            Ok(processed) => Ok(processed),
            Err(Reject { reason, remember }) => {
                if remember {
                    tx.insert_rejected(id.as_str(), self.room_id.as_str(), &reason, &received.json).await?;
                    let mut pdu = received.pdu;
                    pdu.rejected = true;
                    self.events.insert(id.clone(), pdu);
                    self.meta.insert(id, Meta { status: None, state_before: None, state_after: None });
                }
                Ok(Processed::outcome(PduOutcome::Rejected { reason }))
            }
        }
    }

    async fn check(
        &mut self,
        tx: &mut Tx,
        received: &Received,
        kind: PduKind,
    ) -> Result<Result<Processed, Reject>, RequestError> {
        if let Err(reject) = self.check_auth_events(tx, &received.pdu).await? {
            return Ok(Err(reject));
        }
        if kind == PduKind::Outlier {
            self.store(tx, received, EventStatus::Outlier, None, None).await?;
            return Ok(Ok(Processed::outcome(PduOutcome::Accepted)));
        }
        if kind == PduKind::Timeline
            && let Some(snapshot) = self.extended_current_snapshot(tx, &received.pdu).await?
        {
            return self.check_on_current_state(tx, received, snapshot).await;
        }
        let before = match self.state_before(tx, &received.pdu).await? {
            Err(reject) => return Ok(Err(reject)),
            Ok(Some(before)) => before,
            Ok(None) => return self.without_state(tx, received, kind).await.map(Ok),
        };
        if let Err(reason) = self.check_against(tx, &received.pdu, &before.map).await? {
            return Ok(Err(Reject::permanent(format!("not allowed by the state before the event: {reason}"))));
        }
        let after = self.state_after(tx, &received.pdu, &before).await?;
        if kind == PduKind::Backfill {
            self.store(tx, received, EventStatus::Accepted, before.snapshot, after.snapshot).await?;
            let output = self.output(received, StateDelta::default(), true)?;
            return Ok(Ok(Processed { outcome: PduOutcome::Accepted, output: Some(output) }));
        }
        let current = self.current_state(tx).await?;
        if let Err(reason) = self.check_against(tx, &received.pdu, &current.map).await? {
            // Soft failure: kept with its state, so that events built on it
            // can be checked, but never shown or built upon by this server.
            self.store(tx, received, EventStatus::SoftFailed, before.snapshot, after.snapshot).await?;
            let reason = format!("not allowed by the current state: {reason}");
            return Ok(Ok(Processed::outcome(PduOutcome::SoftFailed { reason })));
        }
        self.store(tx, received, EventStatus::Accepted, before.snapshot, after.snapshot).await?;
        let delta = self.advance(tx, &received.pdu, current, after).await?;
        let output = self.output(received, delta, false)?;
        Ok(Ok(Processed { outcome: PduOutcome::Accepted, output: Some(output) }))
    }

    /// The auth events exist, are from this room, were not rejected, and
    /// allow the event; a create event must be this room's first and only.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#authorization-rules>
    async fn check_auth_events(&mut self, tx: &mut Tx, pdu: &Pdu) -> Result<Result<(), Reject>, RequestError> {
        if pdu.event_type == TimelineEventType::RoomCreate {
            if let Some(existing) = self.create_event_id(tx).await?
                && existing != pdu.event_id
                && self.load_event(tx, &existing).await?
            {
                return Ok(Err(Reject::permanent("the room already has a create event")));
            }
            return Ok(allowed_create(&self.rules, &self.version, pdu).map_err(Reject::permanent));
        }
        for auth_id in &pdu.auth_events {
            if !self.load_event(tx, auth_id).await? {
                return Ok(Err(Reject::for_now(format!("auth event {auth_id} is unknown"))));
            }
        }
        if let Some(create_id) = self.create_event_id(tx).await? {
            self.load_event(tx, &create_id).await?;
        }
        let create = v12_create(&self.rules, &self.room_id, &self.events);
        Ok(allowed_by_auth_events(&self.rules, pdu, &self.events, create).map_err(Reject::permanent))
    }

    /// The state keys the auth rules read for `pdu`, the create event's included.
    fn keys_read_by_auth(&self, pdu: &Pdu) -> Result<Vec<(String, String)>, String> {
        let auth_types = auth_types_for_event(
            &pdu.event_type,
            &pdu.sender,
            pdu.state_key.as_deref(),
            &pdu.content,
            &self.rules.authorization,
        )?;
        let mut keys: Vec<(String, String)> =
            auth_types.into_iter().map(|(kind, key)| (kind.to_string(), key)).collect();
        keys.push(("m.room.create".to_owned(), String::new()));
        Ok(keys)
    }

    /// Check `pdu` against `state` (the state before it, or the current state).
    async fn check_against(
        &mut self,
        tx: &mut Tx,
        pdu: &Pdu,
        state: &IdState,
    ) -> Result<Result<(), String>, RequestError> {
        let wanted = match self.keys_read_by_auth(pdu) {
            Ok(keys) => keys,
            Err(reason) => return Ok(Err(reason)),
        };
        for key in &wanted {
            if let Some(id) = state.get(key) {
                self.load_event(tx, id).await?;
            }
        }
        if let Some(create_id) = self.create_event_id(tx).await? {
            self.load_event(tx, &create_id).await?;
        }
        let create = v12_create(&self.rules, &self.room_id, &self.events);
        Ok(allowed_by_state(&self.rules, pdu, state, &self.events, create))
    }

    /// The current snapshot when `pdu` stands on the room's only forward
    /// extremity and the current state is the state after it: then the
    /// state before `pdu` is the current state, and both checks are one.
    /// This is how most events arrive; `None` sends the others through the
    /// full-state path.
    async fn extended_current_snapshot(&mut self, tx: &mut Tx, pdu: &Pdu) -> Result<Option<i64>, RequestError> {
        let [prev] = pdu.prev_events.as_slice() else { return Ok(None) };
        let extremities = tx.forward_extremities(self.room_id.as_str(), 2).await?;
        if !matches!(extremities.as_slice(), [(only, _)] if only == prev.as_str()) || !self.load_event(tx, prev).await?
        {
            return Ok(None);
        }
        let current = tx.room(self.room_id.as_str()).await?.and_then(|row| row.current_snapshot);
        let after_prev = self.meta[prev].state_after;
        Ok(current.filter(|current| after_prev == Some(*current)))
    }

    /// The rest of the checks for an event on top of the current state
    /// (`snapshot`), reading only the state entries the auth rules need.
    async fn check_on_current_state(
        &mut self,
        tx: &mut Tx,
        received: &Received,
        snapshot: i64,
    ) -> Result<Result<Processed, Reject>, RequestError> {
        let pdu = &received.pdu;
        let keys = match self.keys_read_by_auth(pdu) {
            Ok(keys) => keys,
            Err(reason) => {
                return Ok(Err(Reject::permanent(format!("not allowed by the state before the event: {reason}"))));
            }
        };
        let changed_key = pdu.state_key.as_ref().map(|key| (pdu.event_type.to_string(), key.clone()));
        let mut before = IdState::new();
        for key in keys.iter().chain(&changed_key) {
            if let Some((id, _)) = tx.current_state_event(self.room_id.as_str(), &key.0, &key.1).await? {
                before.insert(key.clone(), OwnedEventId::try_from(id).map_err(internal)?);
            }
        }
        if let Err(reason) = self.check_against(tx, pdu, &before).await? {
            return Ok(Err(Reject::permanent(format!("not allowed by the state before the event: {reason}"))));
        }
        let room_id = self.room_id.clone();
        let after = match &changed_key {
            Some(key) => {
                let change = StateMap::from([(key.clone(), pdu.event_id.to_string())]);
                append_state(tx, room_id.as_str(), Some(snapshot), &change).await?
            }
            None => snapshot,
        };
        self.store(tx, received, EventStatus::Accepted, Some(snapshot), Some(after)).await?;
        let prev_events: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
        tx.advance_extremities(room_id.as_str(), &prev_events, pdu.event_id.as_str()).await?;
        let delta = match changed_key {
            Some(key) => {
                tx.set_current_snapshot(room_id.as_str(), after).await?;
                let old: IdState = before.get(&key).map(|id| (key.clone(), id.clone())).into_iter().collect();
                apply_delta(tx, &room_id, &old, &IdState::from([(key, pdu.event_id.clone())])).await?
            }
            None => StateDelta::default(),
        };
        let output = self.output(received, delta, false)?;
        Ok(Ok(Processed { outcome: PduOutcome::Accepted, output: Some(output) }))
    }

    /// Take another server's word (`/state_ids`) for the state before
    /// `at`, an event this server holds as an outlier, so that events on
    /// top of it can be checked: the state after it is the events named
    /// that passed the checks as outliers, and `at` itself. A forged or
    /// rejected event is not among them; an answer naming two events for
    /// one state key, or an event of another room, is not used.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#pdus>
    pub async fn take_state_after(
        &mut self,
        tx: &mut Tx,
        at: OwnedEventId,
        state_ids: Vec<OwnedEventId>,
    ) -> Result<(), RequestError> {
        if !self.load_event(tx, &at).await? || self.events[&at].rejected {
            return Ok(());
        }
        let mut map = IdState::new();
        for id in state_ids.iter().chain([&at]) {
            if !self.load_event(tx, id).await? || self.events[id].rejected {
                continue;
            }
            let pdu = &self.events[id];
            let Some(state_key) = &pdu.state_key else { continue };
            let of_this_room = match &pdu.room_id {
                Some(room_id) => *room_id == self.room_id,
                None => create_id_of(&self.room_id).is_ok_and(|create| create == *id),
            };
            let key = (pdu.event_type.to_string(), state_key.clone());
            // `at` itself follows the state before it and replaces its key.
            if !of_this_room || (*id != at && map.contains_key(&key)) {
                tracing::info!(%at, %id, "unusable state at a missing prev event");
                return Ok(());
            }
            map.insert(key, id.clone());
        }
        self.fetched_states.insert(at, map);
        Ok(())
    }

    /// The state after an event already stored, or `None` when this server
    /// does not know it (an outlier whose state no server told).
    async fn state_after_stored(&mut self, tx: &mut Tx, id: &OwnedEventId) -> Result<Option<State>, RequestError> {
        let meta = self.meta[id].clone();
        match meta.status {
            None => Ok(None),
            Some(EventStatus::Outlier) => {
                Ok(self.fetched_states.get(id).map(|map| State { map: map.clone(), snapshot: None }))
            }
            Some(_) => {
                if let Some(snapshot) = meta.state_after {
                    let map = to_id_state(resolve_snapshot(tx, Some(snapshot)).await?)?;
                    return Ok(Some(State { map, snapshot: Some(snapshot) }));
                }
                let pdu = &self.events[id];
                // Every event but the create has a state before it: none
                // recorded means history backfilled on its auth events
                // alone, whose state is unknown.
                if meta.state_before.is_none() && pdu.event_type != TimelineEventType::RoomCreate {
                    return Ok(None);
                }
                // Rows from before state_after was recorded: before + itself.
                let mut map = to_id_state(resolve_snapshot(tx, meta.state_before).await?)?;
                if let Some(key) = &pdu.state_key {
                    map.insert((pdu.event_type.to_string(), key.clone()), id.clone());
                }
                Ok(Some(State { map, snapshot: None }))
            }
        }
    }

    /// The state before `pdu`: the state after its one prev event, or the
    /// resolution of the states after several. `Ok(None)` when a prev event
    /// is missing or has no known state.
    async fn state_before(&mut self, tx: &mut Tx, pdu: &Pdu) -> Result<Result<Option<State>, Reject>, RequestError> {
        if pdu.prev_events.is_empty() {
            // Only a create event has no prev events (checked by the auth rules).
            return Ok(Ok(Some(State { map: IdState::new(), snapshot: None })));
        }
        let mut states = Vec::new();
        for prev in &pdu.prev_events {
            if !self.load_event(tx, prev).await? {
                return Ok(Ok(None));
            }
            if self.events[prev].rejected {
                return Ok(Err(Reject::permanent(format!("prev event {prev} was rejected"))));
            }
            match self.state_after_stored(tx, prev).await? {
                Some(state) => states.push(state),
                None => return Ok(Ok(None)),
            }
        }
        let first = states.swap_remove(0);
        let map = if states.iter().all(|state| state.map == first.map) {
            if first.snapshot.is_some() {
                return Ok(Ok(Some(first)));
            }
            first.map.clone()
        } else {
            let maps: Vec<IdState> =
                std::iter::once(first.map.clone()).chain(states.into_iter().map(|s| s.map)).collect();
            match self.resolve(tx, &maps).await? {
                Ok(map) => map,
                Err(reason) => return Ok(Err(Reject::for_now(reason))),
            }
        };
        // Stored, because `None` would mean the empty state to later readers.
        let snapshot = write_snapshot(tx, self.room_id.as_str(), &first, &map).await?;
        Ok(Ok(Some(State { map, snapshot: Some(snapshot) })))
    }

    /// Resolve forks after loading every event resolution may read: with
    /// the auth-chain index when it places every state event, else the
    /// states' whole auth chains.
    async fn resolve(&mut self, tx: &mut Tx, maps: &[IdState]) -> Result<Result<IdState, String>, RequestError> {
        if let Some(resolved) = self.resolve_with_index(tx, maps).await? {
            return Ok(resolved);
        }
        let roots: Vec<OwnedEventId> = maps.iter().flat_map(|map| map.values().cloned()).collect();
        self.load_auth_closure(tx, roots).await?;
        Ok(resolve(&self.rules, maps, &self.events).map_err(|e| e.to_string()))
    }

    /// Resolution reading only the conflicted events, the auth difference
    /// (from the index) and what the algorithm asks for, each with its auth
    /// chain: a run that missed an event is run again once it is loaded.
    /// `None` when a state event has no position or the rounds run out.
    async fn resolve_with_index(
        &mut self,
        tx: &mut Tx,
        maps: &[IdState],
    ) -> Result<Option<Result<IdState, String>>, RequestError> {
        let room_id = self.room_id.clone();
        let ids: Vec<&OwnedEventId> =
            maps.iter().flat_map(IdState::values).collect::<HashSet<_>>().into_iter().collect();
        let mut positions = tx.chain_positions(room_id.as_str(), &ids).await?;
        if positions.len() < ids.len() {
            // Stored before the index, or before their auth events had a place.
            let placed = tx.place_unindexed_state(room_id.as_str()).await?;
            tracing::info!(room_id = %self.room_id, placed, "placed state events in the auth-chain index");
            positions = tx.chain_positions(room_id.as_str(), &ids).await?;
        }
        if positions.len() < ids.len() {
            tracing::debug!(room_id = %self.room_id, "state events outside the auth-chain index");
            return Ok(None);
        }
        let cover = Cover::new(tx.chain_links(room_id.as_str()).await?);
        let reaches: Vec<Reach> = maps
            .iter()
            .map(|map| cover.reach(map.values().filter_map(|id| positions.get(id).copied()), false))
            .collect();
        let ranges = difference(&reaches);
        let auth_difference = tx.chain_events(room_id.as_str(), &ranges).await?;
        // Each state's share of the difference: ruma's difference of these
        // sets is the difference itself, as none holds what all hold.
        let auth_chains: AuthChains = reaches
            .iter()
            .map(|reach| {
                let held = |at: &Position| reach.get(&at.chain).is_some_and(|seq| at.seq <= *seq);
                auth_difference.iter().filter(|(_, at)| held(at)).map(|(id, _)| id.clone()).collect()
            })
            .collect();

        let mut wanted: Vec<OwnedEventId> = conflicted(maps).into_iter().cloned().collect();
        wanted.extend(auth_difference.into_iter().map(|(id, _)| id));
        let mut unknown: HashSet<OwnedEventId> =
            self.load_with_auth_chains(tx, wanted.clone(), &cover).await?.into_iter().collect();
        // The state entries the iterative auth checks will read for them.
        let mut read = Vec::new();
        for pdu in wanted.iter().filter_map(|id| self.events.get(id)) {
            for key in self.keys_read_by_auth(pdu).unwrap_or_default() {
                read.extend(maps.iter().filter_map(|map| map.get(&key)).cloned());
            }
        }
        unknown.extend(self.load_with_auth_chains(tx, read, &cover).await?);
        for _ in 0..RESOLVE_ROUNDS {
            let lookup = Lookup::new(&self.events);
            let resolved = resolve_with(&self.rules, maps, Some(auth_chains.clone()), &lookup);
            let missed: Vec<OwnedEventId> = lookup.missed().into_iter().filter(|id| !unknown.contains(id)).collect();
            if missed.is_empty() {
                return Ok(Some(resolved.map_err(|e| e.to_string())));
            }
            unknown.extend(self.load_with_auth_chains(tx, missed, &cover).await?);
        }
        tracing::info!(room_id = %self.room_id, "resolution kept missing events; reading whole auth chains");
        Ok(None)
    }

    /// The state after `pdu` given the state before it, with snapshots
    /// stored for both.
    async fn state_after(&mut self, tx: &mut Tx, pdu: &Pdu, before: &State) -> Result<State, RequestError> {
        let Some(key) = &pdu.state_key else { return Ok(State { map: before.map.clone(), snapshot: before.snapshot }) };
        let mut map = before.map.clone();
        map.insert((pdu.event_type.to_string(), key.clone()), pdu.event_id.clone());
        let change = StateMap::from([((pdu.event_type.to_string(), key.clone()), pdu.event_id.to_string())]);
        let snapshot = append_state(tx, self.room_id.as_str(), before.snapshot, &change).await?;
        Ok(State { map, snapshot: Some(snapshot) })
    }

    /// The room's current state and its snapshot.
    async fn current_state(&mut self, tx: &mut Tx) -> Result<State, RequestError> {
        let snapshot = tx.room(self.room_id.as_str()).await?.and_then(|row| row.current_snapshot);
        let map = to_id_state(resolve_snapshot(tx, snapshot).await?)?;
        Ok(State { map, snapshot })
    }

    /// A PDU whose prev events this server lacks. Its auth events allowed
    /// it, but without the state before it nothing more can be checked, so
    /// a timeline event is kept as an outlier and reported soft-failed (not
    /// shown, not built upon); a backfilled one, which never touches the
    /// current state, is accepted into history on its auth events alone.
    async fn without_state(
        &mut self,
        tx: &mut Tx,
        received: &Received,
        kind: PduKind,
    ) -> Result<Processed, RequestError> {
        if kind == PduKind::Backfill {
            self.store(tx, received, EventStatus::Accepted, None, None).await?;
            let output = self.output(received, StateDelta::default(), true)?;
            return Ok(Processed { outcome: PduOutcome::Accepted, output: Some(output) });
        }
        self.store(tx, received, EventStatus::Outlier, None, None).await?;
        let reason = "the state before the event is unknown (missing prev events): kept as an outlier".to_owned();
        Ok(Processed::outcome(PduOutcome::SoftFailed { reason }))
    }

    /// Store the event itself. A create event also fixes the room's create.
    async fn store(
        &mut self,
        tx: &mut Tx,
        received: &Received,
        status: EventStatus,
        state_before: Option<i64>,
        state_after: Option<i64>,
    ) -> Result<(), RequestError> {
        let pdu = &received.pdu;
        tx.insert_event(&NewEvent {
            event_id: received.event_id.as_str(),
            room_id: self.room_id.as_str(),
            event_type: &pdu.event_type.to_string(),
            state_key: pdu.state_key.as_deref(),
            depth: received.depth,
            state_before,
            state_after,
            status,
            pdu: &received.json,
            origin_server_ts: i64::from(pdu.origin_server_ts.get()),
            auth_events: Some(&pdu.auth_events),
        })
        .await?;
        self.events.insert(received.event_id.clone(), pdu.clone());
        self.meta.insert(received.event_id.clone(), Meta { status: Some(status), state_before, state_after });
        Ok(())
    }

    /// An accepted timeline event moves the forward extremities and the
    /// current state: to the state after it when it extends every
    /// extremity, to the resolution of both when it is on a fork.
    async fn advance(
        &mut self,
        tx: &mut Tx,
        pdu: &Pdu,
        current: State,
        after: State,
    ) -> Result<StateDelta, RequestError> {
        let room_id = self.room_id.clone();
        let extremities = tx.forward_extremities(room_id.as_str(), MAX_EXTREMITIES).await?;
        let extends_all = extremities.iter().all(|(id, _)| pdu.prev_events.iter().any(|prev| prev.as_str() == id));
        let prev_events: Vec<String> = pdu.prev_events.iter().map(ToString::to_string).collect();
        tx.advance_extremities(room_id.as_str(), &prev_events, pdu.event_id.as_str()).await?;
        let (new, snapshot) = if extends_all || current.map == after.map {
            (after.map, after.snapshot)
        } else {
            match self.resolve(tx, &[current.map.clone(), after.map.clone()]).await? {
                Ok(resolved) => (resolved, None),
                Err(reason) => {
                    // The event stays accepted; the current state keeps what it was.
                    tracing::warn!(event_id = %pdu.event_id, %reason, "could not resolve forks");
                    (current.map.clone(), current.snapshot)
                }
            }
        };
        let snapshot = match snapshot {
            Some(snapshot) => snapshot,
            None => write_snapshot(tx, room_id.as_str(), &current, &new).await?,
        };
        tx.set_current_snapshot(room_id.as_str(), snapshot).await?;
        apply_delta(tx, &room_id, &current.map, &new).await
    }

    fn output(
        &self,
        received: &Received,
        state_delta: StateDelta,
        historical: bool,
    ) -> Result<NewRoomEvent, RequestError> {
        Ok(NewRoomEvent {
            event: StoredEvent {
                event_id: received.event_id.clone(),
                room_id: self.room_id.clone(),
                pdu: serde_json::from_str(&received.json)?,
            },
            room_version: self.version.to_string(),
            state_delta,
            txn: None,
            historical,
        })
    }

    /// Start a room joined through another server: `state` (the state
    /// before the join, already stored as outliers) plus the join event.
    pub async fn start_from_join(
        &mut self,
        tx: &mut Tx,
        join: &Received,
        state: IdState,
    ) -> Result<Result<NewRoomEvent, String>, RequestError> {
        if let Err(Reject { reason, .. }) = self.check_auth_events(tx, &join.pdu).await? {
            return Ok(Err(reason));
        }
        if let Err(reason) = self.check_against(tx, &join.pdu, &state).await? {
            return Ok(Err(format!("join not allowed by the room state: {reason}")));
        }
        let empty = State { map: IdState::new(), snapshot: None };
        let snapshot = write_snapshot(tx, self.room_id.as_str(), &empty, &state).await?;
        let before = State { map: state, snapshot: Some(snapshot) };
        let after = self.state_after(tx, &join.pdu, &before).await?;
        self.store(tx, join, EventStatus::Accepted, before.snapshot, after.snapshot).await?;
        let delta = self.advance(tx, &join.pdu, empty, after).await?;
        self.output(join, delta, false).map(Ok)
    }
}

/// The auth rules on a create event: it names the room's version (room
/// version 1 rooms may omit it; a redacted create event loses it before
/// v11), then the rules on the event alone.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#authorization-rules>
pub fn allowed_create(rules: &RoomVersionRules, version: &RoomVersionId, pdu: &Pdu) -> Result<(), String> {
    let content: Value = serde_json::from_str(pdu.content.get()).map_err(|e| e.to_string())?;
    let named = content.get("room_version").and_then(Value::as_str).unwrap_or("1");
    if named != version.as_str() {
        return Err(format!("create event says room version {named}, the room is {version}"));
    }
    check_state_independent_auth_rules(&rules.authorization, pdu, |_| None::<&Pdu>)
}

/// From room version 12 the create event is never an auth event, but the
/// rules still read it: the room's create event when it is in `events`.
pub fn v12_create<'a>(rules: &RoomVersionRules, room_id: &RoomId, events: &'a EventMap) -> Option<&'a Pdu> {
    if !rules.authorization.room_create_event_id_as_room_id {
        return None;
    }
    events.get(&create_id_of(room_id).ok()?)
}

/// The auth rules on a (non-create) `pdu` with its own auth events as the
/// state: all of them must be in `events`; `create` is a v12 room's create
/// event ([`v12_create`]).
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#authorization-rules>
pub fn allowed_by_auth_events(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    events: &EventMap,
    create: Option<&Pdu>,
) -> Result<(), String> {
    check_state_independent_auth_rules(&rules.authorization, pdu, |id| events.get(id))?;
    let by_key: HashMap<(String, String), &Pdu> = pdu
        .auth_events
        .iter()
        .filter_map(|id| events.get(id))
        .chain(create)
        .filter_map(|auth| Some(((auth.event_type.to_string(), auth.state_key.clone()?), auth)))
        .collect();
    check_state_dependent_auth_rules(&rules.authorization, pdu, |kind: &StateEventType, key| {
        by_key.get(&(kind.to_string(), key.to_owned())).copied()
    })
    .map_err(|reason| format!("not allowed by its auth events: {reason}"))
}

/// The auth rules on `pdu` against `state` (the state before it, or the
/// current state), whose events the rules read must be in `events`;
/// `create` as for [`allowed_by_auth_events`].
pub fn allowed_by_state(
    rules: &RoomVersionRules,
    pdu: &Pdu,
    state: &IdState,
    events: &EventMap,
    create: Option<&Pdu>,
) -> Result<(), String> {
    check_state_dependent_auth_rules(&rules.authorization, pdu, |kind: &StateEventType, key| {
        let key = (kind.to_string(), key.to_owned());
        match state.get(&key).and_then(|id| events.get(id)) {
            Some(event) => Some(event),
            None if key.0 == "m.room.create" => create,
            None => None,
        }
    })
}

/// Store `new` as a snapshot: a delta on `parent` when it only adds or
/// replaces entries, a full checkpoint when entries left.
async fn write_snapshot(tx: &mut Tx, room_id: &str, parent: &State, new: &IdState) -> Result<i64, RequestError> {
    let keeps_all = parent.map.keys().all(|key| new.contains_key(key));
    let (base, changes): (Option<i64>, StateMap) = if keeps_all && parent.snapshot.is_some() {
        let changed = new.iter().filter(|(key, id)| parent.map.get(*key) != Some(*id));
        (parent.snapshot, changed.map(|(key, id)| (key.clone(), id.to_string())).collect())
    } else {
        (None, new.iter().map(|(key, id)| (key.clone(), id.to_string())).collect())
    };
    Ok(append_state(tx, room_id, base, &changes).await?)
}

/// Make the current state tables say `new` and report what changed.
async fn apply_delta(tx: &mut Tx, room_id: &RoomId, old: &IdState, new: &IdState) -> Result<StateDelta, RequestError> {
    let mut delta = StateDelta::default();
    for ((kind, key), id) in new {
        if old.get(&(kind.clone(), key.clone())) == Some(id) {
            continue;
        }
        tx.set_current_state(room_id.as_str(), kind, key, id.as_str()).await?;
        let json = tx.event_pdu(id.as_str()).await?.ok_or_else(|| internal(format!("state event {id} missing")))?;
        let pdu: Value = serde_json::from_str(&json)?;
        if kind == "m.room.member" {
            let membership = pdu["content"]["membership"].as_str().unwrap_or("leave").to_owned();
            tx.set_membership(room_id.as_str(), key, &membership, id.as_str()).await?;
        }
        delta.added.push(StoredEvent { event_id: id.clone(), room_id: room_id.to_owned(), pdu });
    }
    for (kind, key) in old.keys() {
        if !new.contains_key(&(kind.clone(), key.clone())) {
            tx.delete_current_state(room_id.as_str(), kind, key).await?;
            if kind == "m.room.member" {
                tx.delete_membership(room_id.as_str(), key).await?;
            }
            delta.removed.push((kind.clone(), key.clone()));
        }
    }
    Ok(delta)
}

/// The events some states hold at a key where others hold another event or none.
fn conflicted(maps: &[IdState]) -> HashSet<&OwnedEventId> {
    let mut conflicted = HashSet::new();
    for map in maps {
        for (key, id) in map {
            if maps.iter().any(|other| other.get(key) != Some(id)) {
                conflicted.insert(id);
            }
        }
    }
    conflicted
}

/// Order events so that each comes after the auth events it cites among
/// them (then by depth), as an auth chain must be checked.
pub fn auth_order(mut events: Vec<Received>) -> Vec<Received> {
    events.sort_by_key(|event| event.depth);
    let ids: HashSet<OwnedEventId> = events.iter().map(|event| event.event_id.clone()).collect();
    let mut placed: HashSet<OwnedEventId> = HashSet::new();
    let mut ordered = Vec::with_capacity(events.len());
    while !events.is_empty() {
        let ready = events
            .iter()
            .position(|event| event.pdu.auth_events.iter().all(|id| placed.contains(id) || !ids.contains(id)));
        // A cycle cannot be authorized anyway; take the shallowest and let the checks fail it.
        let next = events.remove(ready.unwrap_or(0));
        placed.insert(next.event_id.clone());
        ordered.push(next);
    }
    ordered
}
