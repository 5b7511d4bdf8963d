//! State resolution for room version 1, written here because ruma implements
//! only the second algorithm. It is known to reset state (the spec says so);
//! it is kept exactly as specified so that this server agrees with every
//! other server on the old rooms that still use it.
//!
//! Spec: <https://spec.matrix.org/v1.16/rooms/v1/#state-resolution>

use std::cmp::Reverse;
use std::collections::BTreeMap;

use ruma::OwnedEventId;
use ruma::events::StateEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::state_res::check_state_dependent_auth_rules;
use sha1::{Digest, Sha1};

use super::pdu::Pdu;
use super::resolve::{IdState, Lookup, ResolveError};

/// The event types whose conflicts are resolved first, in this order,
/// because they decide what the other events may do.
const AUTH_TYPES: [&str; 3] = ["m.room.power_levels", "m.room.join_rules", "m.room.member"];

/// Each conflicted `(type, state_key)` with the events the states hold for it.
type Conflicts<'e> = BTreeMap<(String, String), Vec<&'e Pdu>>;

/// Resolve `states` as room version 1 does. `events` must hold every event
/// named in them.
pub fn resolve_v1(rules: &RoomVersionRules, states: &[IdState], events: &Lookup<'_>) -> Result<IdState, ResolveError> {
    let (mut resolved, conflicts) = split_conflicts(states, events)?;
    for kind in AUTH_TYPES {
        for (key, candidates) in conflicts.iter().filter(|((k, _), _)| k == kind) {
            resolve_auth_conflict(rules, &mut resolved, key, candidates, events);
        }
    }
    for (key, candidates) in conflicts.iter().filter(|((kind, _), _)| !AUTH_TYPES.contains(&kind.as_str())) {
        let winner = resolve_other_conflict(rules, &resolved, candidates, events);
        resolved.insert(key.clone(), winner);
    }
    Ok(resolved)
}

/// The entries every state that has the key agrees on, and the others with
/// each state's event for them.
fn split_conflicts<'e>(states: &[IdState], events: &Lookup<'e>) -> Result<(IdState, Conflicts<'e>), ResolveError> {
    let mut by_key: BTreeMap<&(String, String), Vec<&OwnedEventId>> = BTreeMap::new();
    for (key, id) in states.iter().flatten() {
        let ids = by_key.entry(key).or_default();
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    let mut unconflicted = IdState::new();
    let mut conflicts = BTreeMap::new();
    for (key, ids) in by_key {
        if let [id] = ids[..] {
            unconflicted.insert(key.clone(), id.clone());
            continue;
        }
        let pdus = ids
            .into_iter()
            .map(|id| events.get(id).ok_or_else(|| ResolveError(format!("conflicted event {id} is not loaded"))))
            .collect::<Result<_, _>>()?;
        conflicts.insert(key.clone(), pdus);
    }
    Ok((unconflicted, conflicts))
}

fn sha1_of(pdu: &Pdu) -> [u8; 20] {
    Sha1::digest(pdu.event_id.as_str().as_bytes()).into()
}

/// Power levels, join rules or one member: from the shallowest event on,
/// each next one replaces the winner in `resolved` while the auth rules
/// allow it in the state resolved so far, and the first refusal ends the run.
fn resolve_auth_conflict(
    rules: &RoomVersionRules,
    resolved: &mut IdState,
    key: &(String, String),
    candidates: &[&Pdu],
    events: &Lookup<'_>,
) {
    let mut ordered = candidates.to_vec();
    ordered.sort_by_key(|pdu| (pdu.depth, Reverse(sha1_of(pdu))));
    resolved.insert(key.clone(), ordered[0].event_id.clone());
    for next in &ordered[1..] {
        if allowed_in(rules, next, resolved, events).is_err() {
            break;
        }
        resolved.insert(key.clone(), next.event_id.clone());
    }
}

/// Any other key: the deepest event (lowest SHA-1 of its id among equals)
/// that the auth rules allow in the resolved state. When none is allowed
/// the deepest is kept, as the spec names no other.
fn resolve_other_conflict(
    rules: &RoomVersionRules,
    resolved: &IdState,
    candidates: &[&Pdu],
    events: &Lookup<'_>,
) -> OwnedEventId {
    let mut ordered = candidates.to_vec();
    ordered.sort_by_key(|pdu| (Reverse(pdu.depth), sha1_of(pdu)));
    let allowed = ordered.iter().find(|pdu| allowed_in(rules, pdu, resolved, events).is_ok());
    allowed.unwrap_or(&ordered[0]).event_id.clone()
}

fn allowed_in(rules: &RoomVersionRules, pdu: &Pdu, state: &IdState, events: &Lookup<'_>) -> Result<(), String> {
    check_state_dependent_auth_rules(&rules.authorization, pdu, |kind: &StateEventType, key| {
        state.get(&(kind.to_string(), key.to_owned())).and_then(|id| events.get(id))
    })
}
