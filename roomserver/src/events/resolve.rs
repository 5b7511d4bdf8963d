//! State resolution over events already loaded in memory: ruma's second
//! algorithm for room versions 2–12, [`super::resolve_v1`] for version 1.
//!
//! Spec: <https://spec.matrix.org/v1.16/rooms/v2/#state-resolution> and, for
//! room version 12, <https://spec.matrix.org/v1.16/rooms/v12/#state-resolution>.

use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use ruma::events::StateEventType;
use ruma::room_version_rules::{RoomVersionRules, StateResolutionV2Rules, StateResolutionVersion};
use ruma::state_res::{self, utils::event_id_set::EventIdSet};
use ruma::{EventId, OwnedEventId};

use super::pdu::Pdu;
use super::resolve_v1::resolve_v1;

/// Events by id. Resolution's graph walks are mostly hashing ids; foldhash
/// is several times faster than the default hasher on them, and its
/// per-process random seed still keeps senders from choosing ids that
/// collide (from room version 3 ids are hashes of the events anyway).
pub type EventMap = HashMap<OwnedEventId, Pdu, foldhash::fast::RandomState>;

/// A set of event ids, hashed as [`EventMap`] hashes them.
type IdSet<'e> = HashSet<&'e EventId, foldhash::fast::RandomState>;

/// `(type, state_key)` → event id, as state resolution reads it.
pub type IdState = BTreeMap<(String, String), OwnedEventId>;

/// Why resolution could not finish: an event it needs was never loaded, or
/// ruma found the inputs inconsistent.
#[derive(Debug, thiserror::Error)]
#[error("state resolution failed: {0}")]
pub struct ResolveError(pub(super) String);

/// The events resolution may read, and the ids it asked for that were not
/// among them: a resolution that missed nothing is the one a map of every
/// event of the room would give, as it read nothing else.
pub struct Lookup<'e> {
    events: &'e EventMap,
    missed: RefCell<HashSet<OwnedEventId>>,
}

impl<'e> Lookup<'e> {
    pub fn new(events: &'e EventMap) -> Self {
        Self { events, missed: RefCell::default() }
    }

    /// The event, or `None` (remembered as missed).
    pub fn get(&self, id: &EventId) -> Option<&'e Pdu> {
        let found = self.events.get(id);
        if found.is_none() {
            self.missed.borrow_mut().insert(id.to_owned());
        }
        found
    }

    /// The ids asked for that were not there.
    pub fn missed(self) -> HashSet<OwnedEventId> {
        self.missed.into_inner()
    }
}

/// Each state's auth chain, less the auth chain of the events every state
/// holds. ruma's auth difference is what some chains have and others lack;
/// the shared events' chain is in every chain, so leaving it out of all of
/// them does not change the difference. It saves walking a big room's
/// unchanged members once per fork and copying their chains.
fn auth_chains_beyond_shared(
    states: &[IdState],
    conflicted: &BTreeSet<&(String, String)>,
    events: &Lookup<'_>,
) -> Vec<EventIdSet<OwnedEventId>> {
    let Some(first) = states.first() else { return Vec::new() };
    fn own<'s>(state: &'s IdState, conflicted: &BTreeSet<&(String, String)>) -> Vec<&'s EventId> {
        conflicted.iter().filter_map(|key| state.get(*key)).map(AsRef::as_ref).collect()
    }
    let conflicted_ids: IdSet = states.iter().flat_map(|state| own(state, conflicted)).collect();
    let shared = first.values().map(AsRef::as_ref).filter(|id| !conflicted_ids.contains(id));
    let shared_chain = walk_auth_events(shared, events, &IdSet::default());
    states
        .iter()
        .map(|state| {
            walk_auth_events(own(state, conflicted), events, &shared_chain).into_iter().map(ToOwned::to_owned).collect()
        })
        .collect()
}

/// The events reachable from `roots` through `auth_events` (a root only when
/// another one reaches it), without entering `known`, which must hold every
/// auth event of each of its events.
fn walk_auth_events<'r, 'e>(
    roots: impl IntoIterator<Item = &'r EventId>,
    events: &Lookup<'e>,
    known: &IdSet<'e>,
) -> IdSet<'e> {
    let parents = |id: &EventId| events.get(id).into_iter().flat_map(|pdu| pdu.auth_events.iter().map(AsRef::as_ref));
    let mut seen = IdSet::default();
    let mut stack: Vec<&'e EventId> = roots.into_iter().flat_map(parents).collect();
    while let Some(id) = stack.pop() {
        if !known.contains(id) && seen.insert(id) {
            stack.extend(parents(id));
        }
    }
    seen
}

/// The auth difference as ruma takes it: one set per state, each event in
/// the sets that some states' full auth chains hold and others' lack.
pub type AuthChains = Vec<EventIdSet<OwnedEventId>>;

/// Resolve `states` (each a fork's full state) with the room's rules.
/// `events` must hold every event of every state and its whole auth chain.
pub fn resolve(rules: &RoomVersionRules, states: &[IdState], events: &EventMap) -> Result<IdState, ResolveError> {
    resolve_with(rules, states, None, &Lookup::new(events))
}

/// Resolve `states` reading events from `events`; `auth_chains`, when
/// given, stand for the states' auth chains (only their difference counts),
/// else they are walked in `events`.
pub fn resolve_with(
    rules: &RoomVersionRules,
    states: &[IdState],
    auth_chains: Option<AuthChains>,
    events: &Lookup<'_>,
) -> Result<IdState, ResolveError> {
    match &rules.state_res {
        StateResolutionVersion::V1 => resolve_v1(rules, states, events),
        StateResolutionVersion::V2(v2_rules) => resolve_v2(rules, v2_rules, states, auth_chains, events),
        other => Err(ResolveError(format!("no implementation of state resolution {other:?}"))),
    }
}

fn resolve_v2(
    rules: &RoomVersionRules,
    v2_rules: &StateResolutionV2Rules,
    states: &[IdState],
    auth_chains: Option<AuthChains>,
    events: &Lookup<'_>,
) -> Result<IdState, ResolveError> {
    let Some(first) = states.first() else { return Ok(IdState::new()) };
    let conflicted = conflicted_keys(states);
    if conflicted.is_empty() {
        return Ok(first.clone());
    }
    let auth_chains = auth_chains.unwrap_or_else(|| auth_chains_beyond_shared(states, &conflicted, events));
    let difference = auth_difference(&auth_chains);
    let conflicted_ids = conflicted.iter().flat_map(|key| states.iter().filter_map(|state| state.get(*key)));
    let subgraph: EventIdSet<OwnedEventId> = if v2_rules.consider_conflicted_state_subgraph {
        conflicted_subgraph(conflicted_ids.clone(), events).into_iter().collect()
    } else {
        EventIdSet::new()
    };
    let full_conflicted_set = difference.iter().chain(conflicted_ids).chain(subgraph.iter());
    let read = keys_read_by_auth_checks(rules, full_conflicted_set, events);
    let maps: Vec<state_res::StateMap<OwnedEventId>> =
        states.iter().map(|state| restricted(state, conflicted.iter().copied().chain(&read))).collect();
    let fetch = |id: &EventId| events.get(id);
    let subgraph = |_: &state_res::StateMap<Vec<OwnedEventId>>| Some(subgraph.clone());
    // ruma takes the difference of the chains it is given: the difference
    // and an empty set give the difference itself.
    let chains = vec![difference, EventIdSet::new()];
    let resolved = state_res::resolve(&rules.authorization, v2_rules, maps.iter(), chains, fetch, subgraph)
        .map_err(|e| ResolveError(e.to_string()))?;
    // What ruma resolved over the keys it was given, and every other
    // unconflicted entry as it stands.
    let mut result = first.clone();
    for key in &conflicted {
        result.remove(*key);
    }
    for ((kind, state_key), id) in resolved {
        let key = (kind.to_string(), state_key);
        if conflicted.contains(&key) || !first.contains_key(&key) {
            result.insert(key, id);
        }
    }
    Ok(result)
}

/// The keys not every state maps to the same event. States are sorted
/// maps, so each is compared with the first in one pass.
fn conflicted_keys(states: &[IdState]) -> BTreeSet<&(String, String)> {
    let mut conflicted = BTreeSet::new();
    let Some((first, rest)) = states.split_first() else { return conflicted };
    for other in rest {
        let (mut ours, mut theirs) = (first.iter().peekable(), other.iter().peekable());
        loop {
            let differing = match (ours.peek().copied(), theirs.peek().copied()) {
                (None, None) => break,
                (Some(_), None) => ours.next().map(|(key, _)| key),
                (None, Some(_)) => theirs.next().map(|(key, _)| key),
                (Some((key, id)), Some((other_key, other_id))) => match key.cmp(other_key) {
                    Ordering::Less => ours.next().map(|(key, _)| key),
                    Ordering::Greater => theirs.next().map(|(key, _)| key),
                    Ordering::Equal => {
                        ours.next();
                        theirs.next();
                        (id != other_id).then_some(key)
                    }
                },
            };
            conflicted.extend(differing);
        }
    }
    conflicted
}

/// The events some chains hold and others lack.
fn auth_difference(chains: &[EventIdSet<OwnedEventId>]) -> EventIdSet<OwnedEventId> {
    chains
        .iter()
        .flat_map(EventIdSet::iter)
        .filter(|id| !chains.iter().all(|chain| chain.contains(id)))
        .cloned()
        .collect()
}

/// Every state key the iterative auth checks may read for `events` (the
/// full conflicted set): the keys the auth rules select for each, and the
/// power levels the mainline starts from. Resolution never reads another
/// key of the unconflicted state, so ruma needs only these.
fn keys_read_by_auth_checks<'a>(
    rules: &RoomVersionRules,
    ids: impl Iterator<Item = &'a OwnedEventId>,
    events: &Lookup<'_>,
) -> HashSet<(String, String)> {
    let mut keys: HashSet<(String, String)> = [("m.room.power_levels", ""), ("m.room.create", "")]
        .into_iter()
        .map(|(kind, key)| (kind.to_owned(), key.to_owned()))
        .collect();
    let distinct: HashSet<&OwnedEventId> = ids.collect();
    for pdu in distinct.into_iter().filter_map(|id| events.get(id)) {
        let Some(state_key) = pdu.state_key.as_deref() else { continue };
        // ruma skips an event whose content gives no auth types: it reads nothing for it.
        let Ok(types) = state_res::auth_types_for_event(
            &pdu.event_type,
            &pdu.sender,
            Some(state_key),
            &pdu.content,
            &rules.authorization,
        ) else {
            continue;
        };
        keys.extend(types.into_iter().map(|(kind, key)| (kind.to_string(), key)));
    }
    keys
}

/// `state`'s entries for `keys`, as ruma takes a state.
fn restricted<'k>(
    state: &IdState,
    keys: impl Iterator<Item = &'k (String, String)>,
) -> state_res::StateMap<OwnedEventId> {
    keys.filter_map(|key| {
        let id = state.get(key)?;
        Some(((StateEventType::from(key.0.as_str()), key.1.clone()), id.clone()))
    })
    .collect()
}

/// The conflicted state subgraph of room version 12: events that are reached
/// from a conflicted event through `auth_events` and themselves reach one.
/// Both walks keep their own stacks: a long chain must not exhaust the
/// thread's.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v12/#state-resolution>
fn conflicted_subgraph<'a>(
    conflicted: impl Iterator<Item = &'a OwnedEventId>,
    events: &Lookup<'_>,
) -> HashSet<OwnedEventId> {
    let conflicted: IdSet = conflicted.map(AsRef::as_ref).collect();
    // The conflicted events' ancestors, each with the ancestors citing it.
    let mut cited_by: HashMap<&EventId, Vec<&EventId>, foldhash::fast::RandomState> = HashMap::default();
    let mut ancestors = conflicted.clone();
    let mut stack: Vec<&EventId> = conflicted.iter().copied().collect();
    while let Some(id) = stack.pop() {
        for parent in events.get(id).into_iter().flat_map(|pdu| pdu.auth_events.iter().map(AsRef::as_ref)) {
            cited_by.entry(parent).or_default().push(id);
            if ancestors.insert(parent) {
                stack.push(parent);
            }
        }
    }
    // Those that reach a conflicted event: its citers, and theirs.
    let mut subgraph = conflicted.clone();
    let mut stack: Vec<&EventId> = conflicted.into_iter().collect();
    while let Some(id) = stack.pop() {
        for &citer in cited_by.get(id).into_iter().flatten() {
            if subgraph.insert(citer) {
                stack.push(citer);
            }
        }
    }
    subgraph.into_iter().map(ToOwned::to_owned).collect()
}

#[cfg(test)]
mod tests {
    //! Resolution over hand-built rooms: two forks off a common event, each
    //! a random run of topic changes, bans and member updates.

    use proptest::prelude::*;
    use ruma::RoomVersionId;
    use serde_json::{Value, json};

    use super::*;
    use crate::events::cover::{AuthPlace, Cover, Link, Position, Reach, difference, place};

    const ROOM: &str = "!room:example.org";
    const ALICE: &str = "@alice:example.org";

    fn member(n: u8) -> String {
        format!("@u{n}:example.org")
    }

    /// A room's events in memory and the state after its latest event.
    #[derive(Clone)]
    struct Fork {
        state: IdState,
        tip: OwnedEventId,
        depth: i64,
        ts: u64,
    }

    struct Room {
        version: RoomVersionId,
        events: EventMap,
        next: u32,
    }

    impl Room {
        /// Create, alice's join, power levels (alice 100), public join rules, members u0..u4.
        fn new(version: RoomVersionId) -> (Self, Fork) {
            let mut room = Self { version, events: EventMap::default(), next: 0 };
            let mut fork = Fork { state: IdState::new(), tip: EventId::parse("$none").unwrap(), depth: 0, ts: 1 };
            room.add(&mut fork, ALICE, "m.room.create", "", json!({"creator": ALICE, "room_version": room.version}));
            room.add(&mut fork, ALICE, "m.room.member", ALICE, json!({"membership": "join"}));
            room.add(&mut fork, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100}}));
            room.add(&mut fork, ALICE, "m.room.join_rules", "", json!({"join_rule": "public"}));
            for n in 0..5 {
                room.add(&mut fork, &member(n), "m.room.member", &member(n), json!({"membership": "join"}));
            }
            (room, fork)
        }

        /// Append a state event to `fork`, citing the auth events its state gives.
        fn add(&mut self, fork: &mut Fork, sender: &str, kind: &str, key: &str, content: Value) -> OwnedEventId {
            self.next += 1;
            let id = EventId::parse(format!("${}", self.next)).unwrap();
            let rules = self.version.rules().unwrap();
            let wanted = auth_types_for(kind, sender, key, &content, &rules);
            let auth: Vec<&OwnedEventId> = wanted.iter().filter_map(|k| fork.state.get(k)).collect();
            let prev: Vec<&OwnedEventId> = if fork.depth == 0 { Vec::new() } else { vec![&fork.tip] };
            fork.ts += 1;
            let json = json!({
                "room_id": ROOM, "sender": sender, "type": kind, "state_key": key, "content": content,
                "prev_events": prev, "auth_events": auth, "origin_server_ts": fork.ts, "depth": fork.depth + 1,
            });
            let pdu = Pdu::parse(id.clone(), &json.to_string()).unwrap();
            self.events.insert(id.clone(), pdu);
            fork.state.insert((kind.to_owned(), key.to_owned()), id.clone());
            fork.tip = id.clone();
            fork.depth += 1;
            id
        }
    }

    fn auth_types_for(
        kind: &str,
        sender: &str,
        key: &str,
        content: &Value,
        rules: &RoomVersionRules,
    ) -> Vec<(String, String)> {
        let raw = serde_json::value::to_raw_value(content).unwrap();
        let sender = ruma::UserId::parse(sender).unwrap();
        ruma::state_res::auth_types_for_event(&kind.into(), &sender, Some(key), &raw, &rules.authorization)
            .unwrap()
            .into_iter()
            .map(|(kind, key)| (kind.to_string(), key))
            .collect()
    }

    impl Room {
        /// Whether the auth rules allow a state event on top of `fork`,
        /// citing the auth events its state gives plus `extra_auth`.
        fn allows(
            &self,
            fork: &Fork,
            sender: &str,
            kind: &str,
            key: Option<&str>,
            content: Value,
            extra_auth: &[OwnedEventId],
        ) -> Result<(), String> {
            let rules = self.version.rules().unwrap();
            let wanted = auth_types_for(kind, sender, key.unwrap_or(""), &content, &rules);
            let mut auth: Vec<&OwnedEventId> = wanted.iter().filter_map(|k| fork.state.get(k)).collect();
            auth.extend(extra_auth);
            let mut json = json!({
                "room_id": ROOM, "sender": sender, "type": kind, "content": content, "prev_events": [fork.tip],
                "auth_events": auth, "origin_server_ts": fork.ts + 1, "depth": fork.depth + 1,
            });
            if let Some(key) = key {
                json["state_key"] = json!(key);
            }
            let pdu = Pdu::parse(EventId::parse("$candidate").unwrap(), &json.to_string()).unwrap();
            let events = &self.events;
            ruma::state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, |id| events.get(id))?;
            ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind, key| {
                fork.state.get(&(kind.to_string(), key.to_owned())).and_then(|id| events.get(id))
            })
        }
    }

    /// Each rule once allowing and once refusing, in every version up to 11.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/server-server-api/#authorization-rules>
    #[test]
    fn auth_rules_allow_and_refuse_across_versions() {
        let stranger = "@stranger:example.org";
        for n in 1..=11 {
            let version = RoomVersionId::try_from(n.to_string()).unwrap();
            let (mut room, mut fork) = Room::new(version.clone());
            let message = json!({"body": "hi"});
            // Members may send messages; strangers may not.
            assert!(room.allows(&fork, &member(0), "m.room.message", None, message.clone(), &[]).is_ok(), "v{n}");
            assert!(room.allows(&fork, stranger, "m.room.message", None, message.clone(), &[]).is_err(), "v{n}");
            // Power levels need power.
            let grab = json!({"users": {member(0): 100}});
            assert!(room.allows(&fork, ALICE, "m.room.power_levels", Some(""), grab.clone(), &[]).is_ok(), "v{n}");
            assert!(room.allows(&fork, &member(0), "m.room.power_levels", Some(""), grab, &[]).is_err(), "v{n}");
            // Auth events must be of the expected types, and not twice.
            let rules_id = fork.state[&("m.room.join_rules".to_owned(), String::new())].clone();
            let err = room.allows(&fork, &member(0), "m.room.message", None, message.clone(), &[rules_id]);
            assert!(err.is_err(), "v{n}: an unexpected auth event");
            let power_id = fork.state[&("m.room.power_levels".to_owned(), String::new())].clone();
            let err = room.allows(&fork, &member(0), "m.room.message", None, message.clone(), &[power_id]);
            assert!(err.is_err(), "v{n}: a duplicate auth event");
            // Public rooms take joins; banned users and invite-only rooms do not.
            let join = json!({"membership": "join"});
            assert!(room.allows(&fork, stranger, "m.room.member", Some(stranger), join.clone(), &[]).is_ok(), "v{n}");
            room.add(&mut fork, ALICE, "m.room.member", stranger, json!({"membership": "ban"}));
            assert!(room.allows(&fork, stranger, "m.room.member", Some(stranger), join.clone(), &[]).is_err(), "v{n}");
            room.add(&mut fork, ALICE, "m.room.join_rules", "", json!({"join_rule": "invite"}));
            let newcomer = "@new:example.org";
            assert!(room.allows(&fork, newcomer, "m.room.member", Some(newcomer), join.clone(), &[]).is_err(), "v{n}");
            room.add(&mut fork, ALICE, "m.room.member", newcomer, json!({"membership": "invite"}));
            assert!(room.allows(&fork, newcomer, "m.room.member", Some(newcomer), join, &[]).is_ok(), "v{n}");
            // Only someone with power can kick; nobody can kick a higher level.
            let kick = json!({"membership": "leave"});
            assert!(room.allows(&fork, ALICE, "m.room.member", Some(&member(1)), kick.clone(), &[]).is_ok(), "v{n}");
            assert!(room.allows(&fork, &member(0), "m.room.member", Some(&member(1)), kick.clone(), &[]).is_err());
            assert!(room.allows(&fork, &member(0), "m.room.member", Some(ALICE), kick, &[]).is_err(), "v{n}");
            // From v10 power levels must be integers, not strings.
            let strings = json!({"users": {ALICE: "100"}});
            let stringy = room.allows(&fork, ALICE, "m.room.power_levels", Some(""), strings, &[]);
            assert_eq!(stringy.is_err(), n >= 10, "v{n}: {stringy:?}");
            // Knocking exists from v7 on.
            room.add(&mut fork, ALICE, "m.room.join_rules", "", json!({"join_rule": "knock"}));
            let knocker = "@knocker:example.org";
            let knock =
                room.allows(&fork, knocker, "m.room.member", Some(knocker), json!({"membership": "knock"}), &[]);
            assert_eq!(knock.is_ok(), n >= 7, "v{n}: {knock:?}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Topic,
        Ban(u8),
        Rename(u8),
        /// Alice gives the member power to ban.
        Empower(u8),
        /// The first member bans the member, with power or without.
        ModBan(u8),
        /// Alice makes the room invite-only.
        CloseRoom,
        /// Someone not yet in the room joins, allowed or not.
        Newcomer(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![Just(Op::Topic), (0u8..5).prop_map(Op::Ban), (0u8..5).prop_map(Op::Rename)]
    }

    /// Also power and join-rule changes, and keys some forks lack.
    fn any_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => op(),
            1 => (0u8..5).prop_map(Op::Empower),
            1 => (1u8..5).prop_map(Op::ModBan),
            1 => Just(Op::CloseRoom),
            1 => (5u8..8).prop_map(Op::Newcomer),
        ]
    }

    fn apply(room: &mut Room, fork: &mut Fork, ops: &[Op], tag: &str) {
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Topic => {
                    room.add(fork, ALICE, "m.room.topic", "", json!({"topic": format!("{tag}{i}")}));
                }
                Op::Ban(n) => {
                    room.add(fork, ALICE, "m.room.member", &member(*n), json!({"membership": "ban"}));
                }
                Op::Rename(n) => {
                    let key = ("m.room.member".to_owned(), member(*n));
                    let banned =
                        fork.state.get(&key).is_some_and(|id| room.events[id].content.get().contains("\"ban\""));
                    if !banned {
                        let content = json!({"membership": "join", "displayname": format!("{tag}{i}")});
                        room.add(fork, &member(*n), "m.room.member", &member(*n), content);
                    }
                }
                Op::Empower(n) => {
                    let levels = json!({"users": {ALICE: 100, member(*n): 50}});
                    room.add(fork, ALICE, "m.room.power_levels", "", levels);
                }
                Op::ModBan(n) => {
                    room.add(fork, &member(0), "m.room.member", &member(*n), json!({"membership": "ban"}));
                }
                Op::CloseRoom => {
                    room.add(fork, ALICE, "m.room.join_rules", "", json!({"join_rule": "invite"}));
                }
                Op::Newcomer(n) => {
                    room.add(fork, &member(*n), "m.room.member", &member(*n), json!({"membership": "join"}));
                }
            }
        }
    }

    fn versions() -> impl Strategy<Value = RoomVersionId> {
        prop_oneof![
            Just(RoomVersionId::V2),
            Just(RoomVersionId::V6),
            Just(RoomVersionId::V10),
            Just(RoomVersionId::V11)
        ]
    }

    /// Room version 1 resolves its own way: by depth, then by the SHA-1 of
    /// the event ids, each candidate checked against what is resolved so far.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/rooms/v1/#state-resolution>
    #[test]
    fn version_1_prefers_the_deepest_allowed_event_and_breaks_ties_by_sha1() {
        let rules = RoomVersionId::V1.rules().unwrap();
        let topic = ("m.room.topic".to_owned(), String::new());
        let (mut room, base) = Room::new(RoomVersionId::V1);
        let (mut a, mut b) = (base.clone(), base.clone());
        let a1 = room.add(&mut a, ALICE, "m.room.topic", "", json!({"topic": "a"}));
        let b1 = room.add(&mut b, ALICE, "m.room.topic", "", json!({"topic": "b"}));
        let lowest_sha1 = [&a1, &b1].into_iter().min_by_key(|id| sha1_hex(id)).unwrap().clone();
        let resolved = resolve(&rules, &[a.state.clone(), b.state.clone()], &room.events).unwrap();
        assert_eq!(resolved[&topic], lowest_sha1, "equal depths: the lowest SHA-1 wins");
        assert_eq!(resolve(&rules, &[b.state.clone(), a.state.clone()], &room.events).unwrap(), resolved);

        let deeper = if lowest_sha1 == a1 { &mut b } else { &mut a };
        let deepest = room.add(deeper, ALICE, "m.room.topic", "", json!({"topic": "deeper"}));
        let resolved = resolve(&rules, &[a.state.clone(), b.state.clone()], &room.events).unwrap();
        assert_eq!(resolved[&topic], deepest, "the deepest event wins");
        // Everything the forks agree on is kept as it is.
        for (key, id) in &base.state {
            assert_eq!(&resolved[key], id, "{key:?}");
        }
    }

    #[test]
    fn version_1_applies_power_levels_in_depth_order_until_one_is_refused() {
        let rules = RoomVersionId::V1.rules().unwrap();
        let power = ("m.room.power_levels".to_owned(), String::new());
        for (u0_level, later_allowed) in [(100, false), (50, true)] {
            let (mut room, base) = Room::new(RoomVersionId::V1);
            let (mut a, mut b) = (base.clone(), base.clone());
            let early =
                room.add(&mut a, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100, member(0): u0_level}}));
            room.add(&mut b, ALICE, "m.room.topic", "", json!({"topic": "b"}));
            let late =
                room.add(&mut b, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100, member(1): 50}}));
            let resolved = resolve(&rules, &[a.state.clone(), b.state.clone()], &room.events).unwrap();
            // Taking away a level equal to one's own is refused, a lower one is not.
            let expected = if later_allowed { late } else { early };
            assert_eq!(resolved[&power], expected, "u0 at {u0_level}");
        }
    }

    #[test]
    fn version_1_skips_a_deeper_event_the_resolved_state_refuses() {
        let rules = RoomVersionId::V1.rules().unwrap();
        let (mut room, mut base) = Room::new(RoomVersionId::V1);
        room.add(&mut base, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100, member(0): 50}}));
        let (mut a, mut b) = (base.clone(), base.clone());
        let demotion = room.add(&mut a, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100}}));
        let allowed_topic = room.add(&mut a, ALICE, "m.room.topic", "", json!({"topic": "by alice"}));
        for n in 0..3 {
            room.add(&mut b, &member(0), "m.room.topic", "", json!({"topic": format!("by u0 {n}")}));
        }
        let resolved = resolve(&rules, &[a.state.clone(), b.state.clone()], &room.events).unwrap();
        assert_eq!(resolved[&("m.room.power_levels".to_owned(), String::new())], demotion);
        assert_eq!(resolved[&("m.room.topic".to_owned(), String::new())], allowed_topic, "u0 lost the power to set it");
    }

    fn sha1_hex(id: &EventId) -> Vec<u8> {
        use sha1::Digest;
        sha1::Sha1::digest(id.as_str().as_bytes()).to_vec()
    }

    fn every_algorithm() -> impl Strategy<Value = RoomVersionId> {
        prop_oneof![Just(RoomVersionId::V1), versions()]
    }

    fn membership(room: &Room, state: &IdState, n: u8) -> String {
        let id = &state[&("m.room.member".to_owned(), member(n))];
        let content: Value = serde_json::from_str(room.events[id].content.get()).unwrap();
        content["membership"].as_str().unwrap().to_owned()
    }

    /// The chain cover of `room`'s events as storage builds it: each event
    /// placed when it is made, after its auth events.
    fn cover_of(room: &Room) -> (HashMap<OwnedEventId, Position>, Vec<Link>) {
        let mut ids: Vec<&OwnedEventId> = room.events.keys().collect();
        ids.sort_by_key(|id| id.as_str()[1..].parse::<u32>().unwrap());
        let (mut positions, mut tips, mut links) = (HashMap::new(), HashMap::new(), Vec::new());
        for id in ids {
            let pdu = &room.events[id];
            let auth: Vec<AuthPlace> = pdu
                .auth_events
                .iter()
                .map(|auth_id| {
                    let (auth, position): (&Pdu, Position) = (&room.events[auth_id], positions[auth_id]);
                    let same_key = auth.event_type == pdu.event_type && auth.state_key == pdu.state_key;
                    AuthPlace { position, same_key, is_tip: same_key && tips[&position.chain] == position.seq }
                })
                .collect();
            let placed = place(&auth, tips.len() as i64 + 1);
            tips.insert(placed.position.chain, placed.position.seq);
            positions.insert(id.clone(), placed.position);
            links.extend(placed.links);
        }
        (positions, links)
    }

    /// The auth difference walked from the states' events, as the spec defines it.
    fn walked_difference(states: &[IdState], events: &EventMap) -> HashSet<OwnedEventId> {
        let lookup = Lookup::new(events);
        let chains: Vec<HashSet<OwnedEventId>> =
            states.iter().map(|state| auth_chain(state.values(), &lookup, false)).collect();
        let union: HashSet<&OwnedEventId> = chains.iter().flatten().collect();
        union.into_iter().filter(|id| !chains.iter().all(|chain| chain.contains(*id))).cloned().collect()
    }

    /// Three forks off one state, each a run of `ops`.
    fn three_forks(room: &mut Room, base: &Fork, ops: [&[Op]; 3]) -> Vec<IdState> {
        ops.iter()
            .enumerate()
            .map(|(n, ops)| {
                let mut fork = base.clone();
                fork.ts += 1000 * n as u64;
                apply(room, &mut fork, ops, &format!("f{n}"));
                fork.state
            })
            .collect()
    }

    #[test]
    fn a_cover_missing_a_link_gives_another_difference() {
        // The walk and the index agree on a room where the difference is not empty…
        let (mut room, base) = Room::new(RoomVersionId::V10);
        let ops = [Op::Rename(0), Op::Rename(0), Op::Ban(1)];
        let states = three_forks(&mut room, &base, [&ops[..], &[Op::Topic], &[]]);
        let walked = walked_difference(&states, &room.events);
        assert!(!walked.is_empty());
        let (positions, links) = cover_of(&room);
        let indexed = |links: Vec<Link>| {
            let cover = Cover::new(links);
            let reaches: Vec<Reach> =
                states.iter().map(|state| cover.reach(state.values().map(|id| positions[id]), false)).collect();
            let ranges = difference(&reaches);
            let within =
                |at: &Position| ranges.get(&at.chain).is_some_and(|(low, high)| at.seq > *low && at.seq <= *high);
            positions.iter().filter(|(_, at)| within(at)).map(|(id, _)| id.clone()).collect::<HashSet<_>>()
        };
        assert_eq!(indexed(links.clone()), walked);
        // Resolving over the conflicted events alone misses what the auth checks read.
        let conflicted: EventMap = states
            .iter()
            .flat_map(|state| state.iter().filter(|(key, id)| base.state.get(*key) != Some(*id)))
            .map(|(_, id)| (id.clone(), room.events[id].clone()))
            .collect();
        let lookup = Lookup::new(&conflicted);
        let _ = resolve_with(&RoomVersionId::V10.rules().unwrap(), &states, None, &lookup);
        assert!(!lookup.missed().is_empty());
        // …and a cover that lost a link no longer does: the comparison can fail.
        let changes_a_chain = |fewer: Vec<Link>| {
            let cover = Cover::new(fewer);
            room.events.keys().any(|id| {
                let reach = cover.reach([positions[id]], false);
                let walked = auth_chain([id], &Lookup::new(&room.events), false);
                let within = |at: &&Position| reach.get(&at.chain).is_some_and(|seq| at.seq <= *seq);
                positions.values().filter(within).count() != walked.len()
            })
        };
        assert!(!changes_a_chain(links.clone()));
        // Some links are implied by others (to the create event, through the
        // power levels); not every one is.
        let needed = (0..links.len()).filter(|dropped| {
            let mut fewer = links.clone();
            fewer.remove(*dropped);
            changes_a_chain(fewer)
        });
        assert!(needed.count() > 0);
    }

    /// All events reachable from `roots` through `auth_events`, roots included
    /// only when `with_roots`.
    fn auth_chain<'a>(
        roots: impl IntoIterator<Item = &'a OwnedEventId>,
        events: &Lookup<'_>,
        with_roots: bool,
    ) -> HashSet<OwnedEventId> {
        let mut seen = HashSet::new();
        let mut stack: Vec<&OwnedEventId> = Vec::new();
        for root in roots {
            if with_roots {
                seen.insert(root.clone());
            }
            stack.extend(events.get(root).into_iter().flat_map(|pdu| pdu.auth_events.iter()));
        }
        while let Some(id) = stack.pop() {
            if seen.insert(id.clone()) {
                stack.extend(events.get(id).into_iter().flat_map(|pdu| pdu.auth_events.iter()));
            }
        }
        seen
    }

    /// ruma's resolution over the whole states and their whole walked auth
    /// chains, as the spec states it.
    fn ruma_on_whole_states(rules: &RoomVersionRules, states: &[IdState], events: &EventMap) -> IdState {
        let StateResolutionVersion::V2(v2_rules) = &rules.state_res else { panic!("not a version 2 algorithm") };
        let lookup = Lookup::new(events);
        let maps: Vec<_> = states.iter().map(|state| restricted(state, state.keys())).collect();
        let chains =
            states.iter().map(|state| auth_chain(state.values(), &lookup, false).into_iter().collect()).collect();
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(conflicted.values().flatten(), &lookup).into_iter().collect())
        };
        state_res::resolve(&rules.authorization, v2_rules, maps.iter(), chains, |id| lookup.get(id), subgraph)
            .unwrap()
            .into_iter()
            .map(|((kind, key), id)| ((kind.to_string(), key), id))
            .collect()
    }

    /// An entry every state holds is not handed to ruma unless the auth
    /// rules read it, and then it decides: a moderator demoted on one fork,
    /// whose ban on the other came before, no longer bans once the first
    /// fork has taken in the demotion.
    #[test]
    fn an_unconflicted_entry_the_auth_rules_read_still_decides() {
        for version in [RoomVersionId::V6, RoomVersionId::V10, RoomVersionId::V11] {
            let (mut room, mut base) = Room::new(version.clone());
            room.add(&mut base, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100, member(0): 50}}));
            let (mut banning, mut demoting) = (base.clone(), base.clone());
            demoting.ts += 1000;
            room.add(&mut banning, &member(0), "m.room.member", &member(1), json!({"membership": "ban"}));
            let demotion = room.add(&mut demoting, ALICE, "m.room.power_levels", "", json!({"users": {ALICE: 100}}));
            let mut banning_after_demotion = banning.state.clone();
            banning_after_demotion.insert(("m.room.power_levels".to_owned(), String::new()), demotion);

            let rules = version.rules().unwrap();
            let states = [banning_after_demotion, demoting.state];
            let resolved = resolve(&rules, &states, &room.events).unwrap();
            assert_eq!(membership(&room, &resolved, 1), "join", "v{version}");
            assert_eq!(resolved, ruma_on_whole_states(&rules, &states, &room.events), "v{version}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Handing ruma only the keys the auth checks read, and the auth
        /// difference as one set, gives what it gives on the whole states.
        #[test]
        fn resolving_the_keys_read_gives_what_whole_states_give(
            version in versions(),
            before in proptest::collection::vec(any_op(), 0..4),
            a in proptest::collection::vec(any_op(), 0..8),
            b in proptest::collection::vec(any_op(), 0..8),
            c in proptest::collection::vec(any_op(), 0..4),
            taken_in in any::<bool>(),
        ) {
            let (mut room, mut base) = Room::new(version.clone());
            apply(&mut room, &mut base, &before, "p");
            let mut states = three_forks(&mut room, &base, [&a, &b, &c]);
            if taken_in {
                // The first fork after taking in the second's power levels
                // and join rules: its events then face rules they did not cite.
                for kind in ["m.room.power_levels", "m.room.join_rules"] {
                    let key = (kind.to_owned(), String::new());
                    let theirs = states[1][&key].clone();
                    states[0].insert(key, theirs);
                }
            }
            let rules = version.rules().unwrap();
            let whole = ruma_on_whole_states(&rules, &states, &room.events);
            prop_assert_eq!(resolve(&rules, &states, &room.events).unwrap(), whole);
        }

        /// The chain cover gives every state's full auth chain, so the auth
        /// difference the walk finds, and resolving with the index's
        /// difference gives what resolving with the walked chains gives.
        #[test]
        fn the_index_gives_the_walked_auth_difference(
            version in every_algorithm(),
            before in proptest::collection::vec(op(), 0..4),
            a in proptest::collection::vec(op(), 0..8),
            b in proptest::collection::vec(op(), 0..8),
            c in proptest::collection::vec(op(), 0..4),
        ) {
            let (mut room, mut base) = Room::new(version.clone());
            apply(&mut room, &mut base, &before, "p");
            let states = three_forks(&mut room, &base, [&a, &b, &c]);
            let (positions, links) = cover_of(&room);
            let cover = Cover::new(links);
            let lookup = Lookup::new(&room.events);
            let reaches: Vec<Reach> = states
                .iter()
                .map(|state| cover.reach(state.values().map(|id| positions[id]), false))
                .collect();
            for (state, reach) in states.iter().zip(&reaches) {
                let held: HashSet<OwnedEventId> = positions
                    .iter()
                    .filter(|(_, at)| reach.get(&at.chain).is_some_and(|seq| at.seq <= *seq))
                    .map(|(id, _)| id.clone())
                    .collect();
                prop_assert_eq!(held, auth_chain(state.values(), &lookup, false));
            }
            let ranges = difference(&reaches);
            let indexed: Vec<(&OwnedEventId, &Position)> = positions
                .iter()
                .filter(|(_, at)| ranges.get(&at.chain).is_some_and(|(low, high)| at.seq > *low && at.seq <= *high))
                .collect();
            let walked = walked_difference(&states, &room.events);
            prop_assert_eq!(indexed.iter().map(|(id, _)| (*id).clone()).collect::<HashSet<_>>(), walked);

            let auth_chains: AuthChains = reaches
                .iter()
                .map(|reach| {
                    let held = |at: &Position| reach.get(&at.chain).is_some_and(|seq| at.seq <= *seq);
                    indexed.iter().filter(|(_, at)| held(at)).map(|(id, _)| (*id).clone()).collect()
                })
                .collect();
            let rules = version.rules().unwrap();
            let full = resolve(&rules, &states, &room.events).unwrap();
            prop_assert_eq!(resolve_with(&rules, &states, Some(auth_chains), &lookup).unwrap(), full);
        }

        /// Resolving over only some events, loading what each run missed,
        /// ends on the result of resolving over all of them.
        #[test]
        fn loading_what_a_run_missed_ends_on_the_full_result(
            version in every_algorithm(),
            a in proptest::collection::vec(op(), 1..8),
            b in proptest::collection::vec(op(), 1..8),
        ) {
            let (mut room, base) = Room::new(version.clone());
            let states = three_forks(&mut room, &base, [&a, &b, &[]]);
            let rules = version.rules().unwrap();
            let full = resolve(&rules, &states, &room.events).unwrap();
            let mut loaded = EventMap::default();
            for state in &states {
                for (key, id) in state {
                    if states.iter().any(|other| other.get(key) != Some(id)) {
                        loaded.insert(id.clone(), room.events[id].clone());
                    }
                }
            }
            // Each run that misses loads at least one more event: it ends.
            loop {
                let lookup = Lookup::new(&loaded);
                let resolved = resolve_with(&rules, &states, None, &lookup);
                let missed = lookup.missed();
                if missed.is_empty() {
                    prop_assert_eq!(resolved.unwrap(), full);
                    break;
                }
                for id in missed {
                    loaded.insert(id.clone(), room.events[&id].clone());
                }
            }
        }

        /// The result does not depend on the order the forks are given in,
        /// and resolving a state with itself changes nothing.
        #[test]
        fn resolution_is_order_independent_and_idempotent(
            version in every_algorithm(),
            a in proptest::collection::vec(op(), 0..8),
            b in proptest::collection::vec(op(), 0..8),
        ) {
            let (mut room, base) = Room::new(version.clone());
            let (mut fork_a, mut fork_b) = (base.clone(), base.clone());
            fork_b.ts += 1000;
            apply(&mut room, &mut fork_a, &a, "a");
            apply(&mut room, &mut fork_b, &b, "b");
            let rules = version.rules().unwrap();
            let ab = resolve(&rules, &[fork_a.state.clone(), fork_b.state.clone()], &room.events).unwrap();
            let ba = resolve(&rules, &[fork_b.state.clone(), fork_a.state.clone()], &room.events).unwrap();
            prop_assert_eq!(&ab, &ba);
            prop_assert_eq!(resolve(&rules, &[ab.clone(), ab.clone()], &room.events).unwrap(), ab.clone());
            prop_assert_eq!(resolve(&rules, &[fork_a.state.clone(), fork_a.state.clone()], &room.events).unwrap(), fork_a.state);
        }

        /// A ban on one fork survives whatever the banned user did on an
        /// older fork.
        #[test]
        fn an_old_fork_never_undoes_a_ban(
            version in versions(),
            victim in 0u8..5,
            before in proptest::collection::vec(op(), 0..4),
            old in proptest::collection::vec(op(), 0..8),
        ) {
            let (mut room, mut base) = Room::new(version.clone());
            // No bans before the fork, so the victim is joined at the fork point.
            let before: Vec<Op> = before.into_iter().filter(|op| !matches!(op, Op::Ban(_))).collect();
            apply(&mut room, &mut base, &before, "p");
            let (mut banned, mut old_fork) = (base.clone(), base.clone());
            room.add(&mut banned, ALICE, "m.room.member", &member(victim), json!({"membership": "ban"}));
            // The old fork: the victim and others keep changing their member events.
            let old: Vec<Op> = old.into_iter().filter(|op| !matches!(op, Op::Ban(_))).chain([Op::Rename(victim)]).collect();
            apply(&mut room, &mut old_fork, &old, "o");
            let rules = version.rules().unwrap();
            for states in [[banned.state.clone(), old_fork.state.clone()], [old_fork.state.clone(), banned.state.clone()]] {
                let resolved = resolve(&rules, &states, &room.events).unwrap();
                prop_assert_eq!(membership(&room, &resolved, victim), "ban");
            }
        }
    }
}
