//! The state resolution fixtures published with the `ruma-state-res` crate,
//! run through the room server's own resolution (`checks::resolve`) and
//! auth checks, and compared with the resolved state the crate's snapshots
//! record. The fixtures are read from the dependency's source directory
//! (found with `cargo metadata`), never copied here.
//!
//! Spec: <https://spec.matrix.org/v1.16/rooms/v2/#state-resolution> and
//! <https://spec.matrix.org/v1.16/rooms/v12/#state-resolution> (MSC4297:
//! state resolution v2.1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use myelin_roomserver::checks::{
    EventMap, IdState, Pdu, allowed_by_auth_events, allowed_by_state, allowed_create, resolve, v12_create,
};
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomVersionId};
use serde_json::Value;

/// How a fixture is formed from its files.
enum Inputs {
    /// Batches of PDUs, resolved as they arrive.
    Batches(&'static [&'static str]),
    /// Whole state sets (lists of event ids) over a list of PDUs.
    States { states: &'static [&'static str], pdus: &'static str },
}

/// Every fixture, named after its snapshot.
const FIXTURES: &[(&str, Inputs)] = &[
    ("minimal_private_chat", Inputs::Batches(&["bootstrap-private-chat.json"])),
    ("minimal_public_chat", Inputs::Batches(&["bootstrap-public-chat.json"])),
    ("origin_server_ts_tiebreak", Inputs::Batches(&["bootstrap-private-chat.json", "origin-server-ts-tiebreak.json"])),
    (
        "ban_vs_power_levels",
        Inputs::Batches(&[
            "bootstrap-public-chat.json",
            "ban-vs-power-levels-alice.json",
            "ban-vs-power-levels-bob.json",
        ]),
    ),
    (
        "topic_vs_power_levels",
        Inputs::Batches(&[
            "bootstrap-public-chat.json",
            "topic-vs-power-levels-alice.json",
            "topic-vs-power-levels-bob.json",
        ]),
    ),
    (
        "power_levels_admin_vs_mod",
        Inputs::Batches(&[
            "bootstrap-public-chat.json",
            "power-levels-admin-vs-mod-alice.json",
            "power-levels-admin-vs-mod-bob.json",
        ]),
    ),
    (
        "topic_vs_ban",
        Inputs::Batches(&[
            "bootstrap-public-chat.json",
            "topic-vs-ban-common.json",
            "topic-vs-ban-alice.json",
            "topic-vs-ban-bob.json",
        ]),
    ),
    (
        "join_rules_vs_join",
        Inputs::Batches(&[
            "bootstrap-public-chat.json",
            "join-rules-vs-join-common.json",
            "join-rules-vs-join-alice.json",
            "join-rules-vs-join-ella.json",
        ]),
    ),
    (
        "concurrent_joins",
        Inputs::Batches(&["bootstrap-public-chat.json", "concurrent-joins-charlie.json", "concurrent-joins-ella.json"]),
    ),
    (
        "msc4297_problem_a_state_res_v2_0",
        Inputs::States {
            states: &["MSC4297-problem-A/state-bob.json", "MSC4297-problem-A/state-charlie.json"],
            pdus: "MSC4297-problem-A/pdus-v11.json",
        },
    ),
    (
        "msc4297_problem_a_state_res_v2_1",
        Inputs::States {
            states: &["MSC4297-problem-A/state-bob.json", "MSC4297-problem-A/state-charlie.json"],
            pdus: "MSC4297-problem-A/pdus-v12.json",
        },
    ),
    (
        "msc4297_problem_b_state_res_v2_0",
        Inputs::States {
            states: &["MSC4297-problem-B/state-eve.json", "MSC4297-problem-B/state-zara.json"],
            pdus: "MSC4297-problem-B/pdus-v11.json",
        },
    ),
    (
        "msc4297_problem_b_state_res_v2_1",
        Inputs::States {
            states: &["MSC4297-problem-B/state-eve.json", "MSC4297-problem-B/state-zara.json"],
            pdus: "MSC4297-problem-B/pdus-v12.json",
        },
    ),
];

/// The resolved state as the snapshots record it: `(type, state_key)` →
/// `(event_id, content)`.
type Resolved = BTreeMap<(String, String), (String, Value)>;

/// The source directory of the `ruma-state-res` package this workspace
/// builds with.
fn crate_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let output = Command::new(env!("CARGO"))
            .args(["metadata", "--format-version", "1", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("cargo metadata runs");
        assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
        let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
        let packages = metadata["packages"].as_array().expect("cargo metadata lists packages");
        let package = packages.iter().find(|package| package["name"] == "ruma-state-res").expect("ruma-state-res");
        let manifest = Path::new(package["manifest_path"].as_str().expect("a manifest path"));
        manifest.parent().expect("the manifest's directory").to_owned()
    })
}

fn fixtures_dir() -> PathBuf {
    crate_dir().join("tests/it/resolve/fixtures")
}

fn snapshots_dir() -> PathBuf {
    crate_dir().join("tests/it/resolve/snapshots")
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One file's PDUs, in file order, with their ids.
fn read_pdus(file: &str) -> Vec<Pdu> {
    let Value::Array(pdus) = read_json(&fixtures_dir().join(file)) else { panic!("{file}: not an array") };
    pdus.into_iter()
        .map(|json| {
            let id = EventId::parse(json["event_id"].as_str().expect("a fixture PDU has an event_id")).unwrap();
            Pdu::parse(id, &json.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .collect()
}

/// The expected resolved state: the JSON after the snapshot's `---` header.
fn snapshot(name: &str) -> Resolved {
    let path = snapshots_dir().join(format!("{name}@resolved_state.snap"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let body = text
        .strip_prefix("---\n")
        .and_then(|rest| rest.split_once("\n---\n"))
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("{name}: no snapshot header"));
    let Value::Array(events) = serde_json::from_str(body).unwrap_or_else(|e| panic!("{name}: {e}")) else {
        panic!("{name}: not an array")
    };
    events
        .into_iter()
        .map(|event| {
            let text = |field: &str| event[field].as_str().unwrap_or_else(|| panic!("{name}: no {field}")).to_owned();
            ((text("type"), text("state_key")), (text("event_id"), event["content"].clone()))
        })
        .collect()
}

/// The room version the first file's first PDU, the create event, names.
fn version_of(create: &Pdu) -> (RoomVersionId, RoomVersionRules) {
    assert_eq!(create.event_type, TimelineEventType::RoomCreate, "a fixture starts with its create event");
    let content: Value = serde_json::from_str(create.content.get()).unwrap();
    let version = RoomVersionId::try_from(content["room_version"].as_str().unwrap_or("1")).unwrap();
    let rules = version.rules().expect("a supported room version");
    (version, rules)
}

fn key_of(pdu: &Pdu) -> (String, String) {
    (pdu.event_type.to_string(), pdu.state_key.clone().expect("fixture PDUs are state events"))
}

fn describe(state: &IdState, events: &EventMap) -> Resolved {
    state
        .iter()
        .map(|(key, id)| {
            let content = serde_json::from_str(events[id].content.get()).unwrap();
            (key.clone(), (id.to_string(), content))
        })
        .collect()
}

/// Resolution as the input pipeline runs it, one event at a time in
/// `prev_events` order: the state before an event is its prev event's
/// state, or the resolution of several; the event must pass the auth rules
/// against its auth events and against that state; the final state is the
/// resolution of the states after every forward extremity.
fn resolve_as_received(
    (version, rules): &(RoomVersionId, RoomVersionRules),
    pdus: &[Pdu],
    events: &EventMap,
) -> IdState {
    let mut after: HashMap<OwnedEventId, IdState> = HashMap::new();
    let mut pending: Vec<&Pdu> = pdus.iter().collect();
    while !pending.is_empty() {
        let ready = pending
            .iter()
            .position(|pdu| pdu.prev_events.iter().all(|prev| after.contains_key(prev)))
            .expect("every prev event is among the fixture's PDUs");
        let pdu = pending.remove(ready);
        let prev_states: Vec<IdState> = pdu.prev_events.iter().map(|prev| after[prev].clone()).collect();
        let before = match prev_states.as_slice() {
            [] => IdState::new(),
            [only] => only.clone(),
            several => resolve(rules, several, events).expect("resolving the prev events' states"),
        };
        let allowed = if pdu.event_type == TimelineEventType::RoomCreate {
            allowed_create(rules, version, pdu)
        } else {
            let room_id = pdu.room_id.as_ref().expect("non-create PDUs name their room");
            let create = v12_create(rules, room_id, events);
            allowed_by_auth_events(rules, pdu, events, create)
                .and_then(|()| allowed_by_state(rules, pdu, &before, events, create))
        };
        if let Err(reason) = allowed {
            panic!("{} is refused: {reason}", pdu.event_id);
        }
        let mut state = before;
        state.insert(key_of(pdu), pdu.event_id.clone());
        after.insert(pdu.event_id.clone(), state);
    }
    let cited: BTreeSet<&OwnedEventId> = pdus.iter().flat_map(|pdu| &pdu.prev_events).collect();
    let leaves: Vec<IdState> =
        pdus.iter().filter(|pdu| !cited.contains(&pdu.event_id)).map(|pdu| after[&pdu.event_id].clone()).collect();
    resolve(rules, &leaves, events).expect("resolving the forward extremities")
}

/// Resolution of every event of a batch as its own one-event state, with
/// the state the batches before resolved to.
fn resolve_batch(rules: &RoomVersionRules, pdus: &[Pdu], events: &EventMap, prev: Option<IdState>) -> IdState {
    let states: Vec<IdState> =
        prev.into_iter().chain(pdus.iter().map(|pdu| IdState::from([(key_of(pdu), pdu.event_id.clone())]))).collect();
    resolve(rules, &states, events).expect("resolving a batch")
}

/// A batches fixture resolved three ways (as received, batch by batch, all
/// at once), which must agree.
fn run_batches(files: &[&str]) -> Resolved {
    let batches: Vec<Vec<Pdu>> = files.iter().map(|file| read_pdus(file)).collect();
    let version = version_of(&batches[0][0]);
    let rules = &version.1;
    let all: Vec<Pdu> = batches.iter().flatten().cloned().collect();
    let events: EventMap = all.iter().map(|pdu| (pdu.event_id.clone(), pdu.clone())).collect();

    let received = resolve_as_received(&version, &all, &events);
    let mut batched = None;
    for batch in &batches {
        batched = Some(resolve_batch(rules, batch, &events, batched));
    }
    let batched = batched.expect("at least one batch");
    let atomic = resolve_batch(rules, &all, &events, None);

    let received = describe(&received, &events);
    assert_eq!(received, describe(&batched, &events), "as received vs batch by batch");
    assert_eq!(received, describe(&atomic, &events), "as received vs all at once");
    received
}

/// A state sets fixture: its states resolved at once.
fn run_states(states: &[&str], pdus: &str) -> Resolved {
    let pdus = read_pdus(pdus);
    let (_, rules) = version_of(&pdus[0]);
    let events: EventMap = pdus.iter().map(|pdu| (pdu.event_id.clone(), pdu.clone())).collect();
    let states: Vec<IdState> = states
        .iter()
        .map(|file| {
            let Value::Array(ids) = read_json(&fixtures_dir().join(file)) else { panic!("{file}: not an array") };
            ids.iter()
                .map(|id| {
                    let id = EventId::parse(id.as_str().expect("an event id")).unwrap();
                    (key_of(&events[&id]), id)
                })
                .collect()
        })
        .collect();
    describe(&resolve(&rules, &states, &events).expect("resolving the states"), &events)
}

fn run(name: &str) -> Resolved {
    let (_, inputs) = FIXTURES.iter().find(|(fixture, _)| *fixture == name).expect("a known fixture");
    let resolved = match inputs {
        Inputs::Batches(files) => run_batches(files),
        Inputs::States { states, pdus } => run_states(states, pdus),
    };
    assert_eq!(resolved, snapshot(name), "{name}: resolved state differs from the snapshot");
    resolved
}

/// Every fixture file and snapshot the crate ships is run by a test here,
/// so a new one in a ruma upgrade cannot go unnoticed.
#[test]
fn every_published_fixture_is_covered() {
    fn files_under(dir: &Path, base: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files_under(&path, base, found);
            } else {
                found.insert(path.strip_prefix(base).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let mut shipped = BTreeSet::new();
    files_under(&fixtures_dir(), &fixtures_dir(), &mut shipped);
    let mut used = BTreeSet::new();
    for (_, inputs) in FIXTURES {
        match inputs {
            Inputs::Batches(files) => used.extend(files.iter().map(|f| f.to_string())),
            Inputs::States { states, pdus } => {
                used.extend(states.iter().map(|f| f.to_string()));
                used.insert(pdus.to_string());
            }
        }
    }
    assert_eq!(shipped, used, "fixture files");

    let mut snapshots = BTreeSet::new();
    files_under(&snapshots_dir(), &snapshots_dir(), &mut snapshots);
    let named: BTreeSet<String> = FIXTURES.iter().map(|(name, _)| format!("{name}@resolved_state.snap")).collect();
    assert_eq!(snapshots, named, "snapshots");
}

#[test]
fn minimal_private_chat() {
    run("minimal_private_chat");
}

#[test]
fn minimal_public_chat() {
    run("minimal_public_chat");
}

#[test]
fn origin_server_ts_tiebreak() {
    run("origin_server_ts_tiebreak");
}

#[test]
fn ban_vs_power_levels() {
    run("ban_vs_power_levels");
}

#[test]
fn topic_vs_power_levels() {
    run("topic_vs_power_levels");
}

#[test]
fn power_levels_admin_vs_mod() {
    run("power_levels_admin_vs_mod");
}

#[test]
fn topic_vs_ban() {
    run("topic_vs_ban");
}

#[test]
fn join_rules_vs_join() {
    run("join_rules_vs_join");
}

#[test]
fn concurrent_joins() {
    run("concurrent_joins");
}

fn event_of<'a>(resolved: &'a Resolved, kind: &str) -> Option<&'a str> {
    resolved.get(&(kind.to_owned(), String::new())).map(|(id, _)| id.as_str())
}

/// MSC4297 problem A: v2.0 (room version 11) starts the iterative auth
/// checks from the unconflicted state, so the join rules are lost; v2.1
/// (room version 12) starts from the empty state and keeps them.
#[test]
fn msc4297_problem_a() {
    let v11 = run("msc4297_problem_a_state_res_v2_0");
    let v12 = run("msc4297_problem_a_state_res_v2_1");
    assert_eq!(event_of(&v11, "m.room.join_rules"), None, "v11 keeps the v2.0 outcome");
    assert_eq!(event_of(&v12, "m.room.join_rules"), Some("$01-m-room-join_rules"), "v12 resolves with v2.1");
}

/// MSC4297 problem B: v2.0 (room version 11) leaves the conflicted state
/// subgraph out and resets the power levels to the first event; v2.1
/// (room version 12) includes it and keeps the latest.
#[test]
fn msc4297_problem_b() {
    let v11 = run("msc4297_problem_b_state_res_v2_0");
    let v12 = run("msc4297_problem_b_state_res_v2_1");
    assert_eq!(event_of(&v11, "m.room.power_levels"), Some("$00-m-room-power_levels"), "v11 keeps the v2.0 outcome");
    assert_eq!(event_of(&v12, "m.room.power_levels"), Some("$02-m-room-power_levels"), "v12 resolves with v2.1");
}

/// The comparison itself can fail: a resolved state that differs from the
/// snapshot in one event is caught.
#[test]
fn a_different_resolution_does_not_match_the_snapshot() {
    let mut resolved = run("topic_vs_ban");
    let key = ("m.room.member".to_owned(), "@bob:example.com".to_owned());
    resolved.get_mut(&key).expect("bob's membership").0 = "$00-m-room-member-join-bob".to_owned();
    assert_ne!(resolved, snapshot("topic_vs_ban"));
}
