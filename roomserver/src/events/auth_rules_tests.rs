//! Every authorization rule of every room version, each allowing once and
//! refusing once, through the checks the input pipeline runs on a received
//! PDU: [`allowed_create`] on a create event; [`allowed_by_auth_events`],
//! then [`allowed_by_state`] against the state before it, on any other.
//!
//! Spec: <https://spec.matrix.org/v1.16/rooms/v1/#authorization-rules> and
//! the changes in room versions 3, 6, 7, 8, 10, 11 and 12 (each version's
//! page; the latest rules are
//! <https://spec.matrix.org/v1.16/rooms/v12/#authorization-rules>).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::RangeInclusive;

use myelin_types::signing::ServerSigningKey;
use ruma::events::TimelineEventType;
use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomVersionId, UserId};
use serde_json::{Value, json};

use super::pdu::Pdu;
use super::remote::{IdState, RemoteRoom, allowed_by_auth_events, allowed_by_state, allowed_create, v12_create};
use super::resolve::EventMap;
use crate::error::RequestError;

/// The creator; level 100 up to v11, a creator's infinite level in v12.
const ALICE: &str = "@alice:a.example";
/// A moderator, level 50.
const BOB: &str = "@bob:a.example";
/// A member on another server, level 0.
const CAROL: &str = "@carol:b.example";
/// Never in the room.
const DAN: &str = "@dan:b.example";
/// Never in the room, same server as the creator.
const ERIN: &str = "@erin:a.example";

const VERSIONS: RangeInclusive<u8> = 1..=12;

/// `extra` merged into `base`: objects field by field, `null` removes.
fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, extra) => *base = extra,
    }
}

/// A room's events in memory and the state after its latest event.
struct Room {
    version: u8,
    version_id: RoomVersionId,
    rules: RoomVersionRules,
    room_id: OwnedRoomId,
    events: EventMap,
    state: IdState,
    tip: OwnedEventId,
    depth: i64,
    next: u32,
}

impl Room {
    /// Room versions 1 and 2 carry event ids with the sender's domain.
    fn event_id(version: u8, local: &str) -> OwnedEventId {
        let id = if version <= 2 { format!("${local}:a.example") } else { format!("${local}") };
        EventId::parse(id).expect("valid event id")
    }

    fn create_id(version: u8) -> OwnedEventId {
        Self::event_id(version, "create")
    }

    /// Alice's create event, naming the version and (up to v10) its creator,
    /// with `extra` merged into its content.
    fn create_json(version: u8, extra: Value) -> Value {
        let mut content = json!({"room_version": version.to_string()});
        if version <= 10 {
            content["creator"] = json!(ALICE);
        }
        merge(&mut content, extra);
        let mut event = json!({
            "type": "m.room.create", "sender": ALICE, "state_key": "", "content": content,
            "prev_events": [], "auth_events": [], "origin_server_ts": 1, "depth": 1,
        });
        // From v12 the room id is the create event's id, and the event has none.
        if version <= 11 {
            event["room_id"] = json!("!room:a.example");
        }
        event
    }

    /// A room with only its create event, `extra` merged into its content.
    fn bare(version: u8, extra: Value) -> Result<Self, String> {
        let version_id = RoomVersionId::try_from(version.to_string()).expect("valid version");
        let rules = version_id.rules().expect("supported version");
        let create = Self::create_id(version);
        let room_id = if version >= 12 {
            format!("!{}", create.as_str().trim_start_matches('$'))
        } else {
            "!room:a.example".to_owned()
        };
        let mut room = Self {
            version,
            version_id,
            rules,
            room_id: room_id.try_into().expect("valid room id"),
            events: EventMap::default(),
            state: IdState::new(),
            tip: create.clone(),
            depth: 0,
            next: 0,
        };
        let json = Self::create_json(version, extra);
        room.check(&json).map_err(|e| format!("setup: create: {e}"))?;
        room.apply(create, &json, false);
        Ok(room)
    }

    /// Alice's room with `extra` in the create event: her join, the power
    /// levels ([`Self::power_levels`]), public join rules, then Bob and Carol.
    fn with_create(version: u8, extra: Value) -> Result<Self, String> {
        let mut room = Self::bare(version, extra)?;
        room.join(ALICE)?;
        room.power(json!({}))?;
        room.join_rule("public")?;
        room.join(BOB)?;
        room.join(CAROL)?;
        Ok(room)
    }

    fn new(version: u8) -> Result<Self, String> {
        Self::with_create(version, json!({}))
    }

    /// Bob at 50, Alice at 100 (unless v12, where creators are not listed)
    /// and the spec's defaults spelled out, with `extra` merged in.
    fn power_levels(&self, extra: Value) -> Value {
        let mut content = json!({
            "users": {BOB: 50}, "users_default": 0, "events_default": 0, "state_default": 50,
            "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        });
        if self.version <= 11 {
            content["users"][ALICE] = json!(100);
        }
        merge(&mut content, extra);
        content
    }

    /// An event on top of the room citing the auth events its type, sender
    /// and content select from the state.
    fn event(&self, sender: &str, kind: &str, key: Option<&str>, content: Value) -> Value {
        let raw = serde_json::value::to_raw_value(&content).expect("JSON");
        let sender_id = UserId::parse(sender).expect("valid user id");
        let selected = ruma::state_res::auth_types_for_event(
            &TimelineEventType::from(kind),
            &sender_id,
            key,
            &raw,
            &self.rules.authorization,
        )
        .unwrap_or_default();
        let auth: Vec<&OwnedEventId> =
            selected.iter().filter_map(|(kind, key)| self.state.get(&(kind.to_string(), key.clone()))).collect();
        let mut event = json!({
            "room_id": self.room_id, "sender": sender, "type": kind, "content": content,
            "prev_events": [self.tip], "auth_events": auth,
            "origin_server_ts": self.depth + 2, "depth": self.depth + 2,
        });
        if let Some(key) = key {
            event["state_key"] = json!(key);
        }
        event
    }

    /// The checks the pipeline runs on a received event (its id from an
    /// `event_id` field, else a fresh one).
    fn check(&self, json: &Value) -> Result<(), String> {
        let id = match json.get("event_id").and_then(Value::as_str) {
            Some(id) => EventId::parse(id).expect("valid event id"),
            None => Self::event_id(self.version, "candidate"),
        };
        let pdu = Pdu::parse(id, &json.to_string()).map_err(|e| e.to_string())?;
        if pdu.event_type == TimelineEventType::RoomCreate {
            return allowed_create(&self.rules, &self.version_id, &pdu);
        }
        let room_id = pdu.room_id.clone().unwrap_or_else(|| self.room_id.clone());
        let create = v12_create(&self.rules, &room_id, &self.events);
        allowed_by_auth_events(&self.rules, &pdu, &self.events, create)?;
        allowed_by_state(&self.rules, &pdu, &self.state, &self.events, create)
    }

    /// Store an event; a state event that was not rejected enters the state.
    fn apply(&mut self, id: OwnedEventId, json: &Value, rejected: bool) {
        let mut pdu = Pdu::parse(id.clone(), &json.to_string()).expect("valid PDU");
        pdu.rejected = rejected;
        if !rejected {
            if let Some(key) = &pdu.state_key {
                self.state.insert((pdu.event_type.to_string(), key.clone()), id.clone());
            }
            self.tip = id.clone();
            self.depth += 1;
        }
        self.events.insert(id, pdu);
    }

    fn fresh_id(&mut self) -> OwnedEventId {
        self.next += 1;
        Self::event_id(self.version, &format!("e{}", self.next))
    }

    /// Whether the rules allow this event now.
    fn try_send(&self, sender: &str, kind: &str, key: Option<&str>, content: Value) -> Result<(), String> {
        self.check(&self.event(sender, kind, key, content))
    }

    /// Add an event the rules must allow; a refusal is a broken setup.
    fn send(&mut self, sender: &str, kind: &str, key: Option<&str>, content: Value) -> Result<OwnedEventId, String> {
        let json = self.event(sender, kind, key, content);
        self.check(&json).map_err(|e| format!("setup: {kind} from {sender}: {e}"))?;
        let id = self.fresh_id();
        self.apply(id.clone(), &json, false);
        Ok(id)
    }

    fn try_member(&self, sender: &str, target: &str, membership: &str) -> Result<(), String> {
        self.try_send(sender, "m.room.member", Some(target), json!({"membership": membership}))
    }

    fn member(&mut self, sender: &str, target: &str, membership: &str) -> Result<OwnedEventId, String> {
        self.send(sender, "m.room.member", Some(target), json!({"membership": membership}))
    }

    fn join(&mut self, user: &str) -> Result<OwnedEventId, String> {
        self.member(user, user, "join")
    }

    /// Alice replaces the power levels with [`Self::power_levels`]`(extra)`.
    fn power(&mut self, extra: Value) -> Result<OwnedEventId, String> {
        let content = self.power_levels(extra);
        self.send(ALICE, "m.room.power_levels", Some(""), content)
    }

    fn try_power(&self, sender: &str, extra: Value) -> Result<(), String> {
        self.try_send(sender, "m.room.power_levels", Some(""), self.power_levels(extra))
    }

    fn join_rule(&mut self, rule: &str) -> Result<OwnedEventId, String> {
        self.send(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": rule}))
    }

    fn message(&self, sender: &str) -> Value {
        self.event(sender, "m.room.message", None, json!({"msgtype": "m.text", "body": "hi"}))
    }

    fn id_of(&self, kind: &str, key: &str) -> OwnedEventId {
        self.state[&(kind.to_owned(), key.to_owned())].clone()
    }
}

/// A create event of room version `v` with `extra` merged into the event.
fn try_create(v: u8, extra: Value) -> Result<(), String> {
    let room = Room::bare(v, json!({}))?;
    let mut json = Room::create_json(v, json!({}));
    merge(&mut json, extra);
    room.check(&json)
}

/// A join-via-server join of Dan into a room whose join rule is `rule`,
/// where inviting takes level 50, authorised by `via`.
fn try_join_via(v: u8, rule: &str, via: Option<&str>) -> Result<(), String> {
    let mut room = Room::new(v)?;
    room.power(json!({"invite": 50}))?;
    room.send(
        ALICE,
        "m.room.join_rules",
        Some(""),
        json!({"join_rule": rule, "allow": [
            {"type": "m.room_membership", "room_id": "!other:a.example"}
        ]}),
    )?;
    let mut content = json!({"membership": "join"});
    if let Some(via) = via {
        content["join_authorised_via_users_server"] = json!(via);
    }
    room.try_send(DAN, "m.room.member", Some(DAN), content)
}

/// A fixed Ed25519 key, `1` or `2`: an identity server's in third-party
/// invites, a server's in signed PDUs.
fn fixed_key(which: u8) -> ServerSigningKey {
    // Seeds of 32 bytes of 1 and of 2.
    let seed = match which {
        1 => "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE",
        _ => "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI",
    };
    ServerSigningKey::parse(&format!("ed25519 0 {seed}")).expect("valid key")
}

/// Carol offered a third-party invite with token `tok` and the public key
/// [`fixed_key`]`(1)`; `sender` sends the invite for `target` whose
/// `signed` block is `signed` (signed with [`fixed_key`]`(key)` unless `None`).
fn try_third_party(
    v: u8,
    sender: &str,
    target: &str,
    signed: Value,
    key: Option<u8>,
    ban_first: bool,
) -> Result<(), String> {
    let mut room = Room::new(v)?;
    let public_key = fixed_key(1).public_key_base64();
    room.send(
        CAROL,
        "m.room.third_party_invite",
        Some("tok"),
        json!({
            "display_name": "d…@example.org", "key_validity_url": "https://id.example/isvalid",
            "public_key": public_key, "public_keys": [{"public_key": public_key}],
        }),
    )?;
    if ban_first {
        room.member(ALICE, target, "ban")?;
    }
    let CanonicalJsonValue::Object(mut signed) = CanonicalJsonValue::try_from(signed).expect("canonical") else {
        panic!("signed is an object")
    };
    if let Some(key) = key {
        ruma::signatures::sign_json("id.example", &fixed_key(key).keypair, &mut signed).expect("signing");
    }
    let content = json!({"membership": "invite", "third_party_invite": {
        "display_name": "d…@example.org", "signed": signed,
    }});
    room.try_send(sender, "m.room.member", Some(target), content)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allow,
    /// Refused, with this fragment in the reason.
    Refuse(&'static str),
}
use Expect::{Allow, Refuse};

/// One row: an event under a rule, in the versions the row is about.
struct Case {
    rule: &'static str,
    versions: RangeInclusive<u8>,
    expect: Expect,
    event: fn(u8) -> Result<(), String>,
}

fn case(rule: &'static str, versions: RangeInclusive<u8>, expect: Expect, event: fn(u8) -> Result<(), String>) -> Case {
    Case { rule, versions, expect, event }
}

/// The rules in the spec's order. A rule a version lacks or changes gets
/// rows for those versions too, showing the other outcome.
fn cases() -> Vec<Case> {
    vec![
        // 1. m.room.create
        case("create: no prev events", VERSIONS, Allow, |v| try_create(v, json!({}))),
        case("create: no prev events", VERSIONS, Refuse("cannot have previous events"), |v| {
            try_create(v, json!({"prev_events": [Room::event_id(v, "elsewhere")]}))
        }),
        case("create: room id on the sender's server", 1..=11, Allow, |v| try_create(v, json!({}))),
        case("create: room id on the sender's server", 1..=11, Refuse("does not match sender's server name"), |v| {
            try_create(v, json!({"sender": "@mallory:b.example"}))
        }),
        case("create: no room_id", 12..=12, Allow, |v| try_create(v, json!({}))),
        case("create: no room_id", 12..=12, Refuse("cannot have a `room_id` field"), |v| {
            try_create(v, json!({"room_id": "!create"}))
        }),
        case("create: room_version is the room's", VERSIONS, Allow, |v| try_create(v, json!({}))),
        case("create: room_version is the room's", VERSIONS, Refuse("says room version 999"), |v| {
            try_create(v, json!({"content": {"room_version": "999"}}))
        }),
        case("create: room_version is the room's", 1..=1, Allow, |v| {
            try_create(v, json!({"content": {"room_version": null}}))
        }),
        case("create: room_version is the room's", 2..=12, Refuse("says room version 1,"), |v| {
            try_create(v, json!({"content": {"room_version": null}}))
        }),
        case("create: creator field (v1-v10)", 1..=10, Allow, |v| try_create(v, json!({}))),
        case("create: creator field (v1-v10)", 1..=10, Refuse("missing `creator` field"), |v| {
            try_create(v, json!({"content": {"creator": null}}))
        }),
        case("create: creator field (v1-v10)", 11..=12, Allow, |v| {
            try_create(v, json!({"content": {"creator": null}}))
        }),
        case("create: additional_creators are user ids", 12..=12, Allow, |v| {
            try_create(v, json!({"content": {"additional_creators": [BOB]}}))
        }),
        case("create: additional_creators are user ids", 12..=12, Refuse("invalid `additional_creators`"), |v| {
            try_create(v, json!({"content": {"additional_creators": ["bob"]}}))
        }),
        case("create: additional_creators are user ids", 11..=11, Allow, |v| {
            try_create(v, json!({"content": {"additional_creators": ["bob"]}}))
        }),
        // 2. The auth events
        case("auth events: no duplicate type and state_key", VERSIONS, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("auth events: no duplicate type and state_key", VERSIONS, Refuse("duplicate auth event"), |v| {
            let room = Room::new(v)?;
            let mut json = room.message(CAROL);
            json["auth_events"].as_array_mut().unwrap().push(json!(room.id_of("m.room.power_levels", "")));
            room.check(&json)
        }),
        case("auth events: only those the selection names", VERSIONS, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("auth events: only those the selection names", VERSIONS, Refuse("unexpected auth event"), |v| {
            let room = Room::new(v)?;
            let mut json = room.message(CAROL);
            json["auth_events"].as_array_mut().unwrap().push(json!(room.id_of("m.room.join_rules", "")));
            room.check(&json)
        }),
        case("auth events: none was rejected", VERSIONS, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("auth events: none was rejected", VERSIONS, Refuse("rejected auth event"), |v| {
            let mut room = Room::new(v)?;
            let rename =
                room.event(CAROL, "m.room.member", Some(CAROL), json!({"membership": "join", "displayname": "c"}));
            let rejected = room.fresh_id();
            room.apply(rejected.clone(), &rename, true);
            let mut json = room.message(CAROL);
            let own = json!(room.id_of("m.room.member", CAROL));
            json["auth_events"].as_array_mut().unwrap().retain(|id| *id != own);
            json["auth_events"].as_array_mut().unwrap().push(json!(rejected));
            room.check(&json)
        }),
        case("auth events: the create event is among them (v1-v11)", 1..=11, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("auth events: the create event is among them (v1-v11)", 1..=11, Refuse("no `m.room.create` event"), |v| {
            let room = Room::new(v)?;
            let mut json = room.message(CAROL);
            let create = json!(Room::create_id(v));
            json["auth_events"].as_array_mut().unwrap().retain(|id| *id != create);
            room.check(&json)
        }),
        case("auth events: the create event is not among them (v12)", 12..=12, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        // The v12 create event has no room id: ruma refuses it as from another room.
        case("auth events: the create event is not among them (v12)", 12..=12, Refuse("not in the same room"), |v| {
            let room = Room::new(v)?;
            let mut json = room.message(CAROL);
            json["auth_events"].as_array_mut().unwrap().push(json!(Room::create_id(v)));
            room.check(&json)
        }),
        case("room id: an accepted create event's id (v12)", 12..=12, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("room id: an accepted create event's id (v12)", 12..=12, Refuse("failed to find `m.room.create`"), |v| {
            let room = Room::new(v)?;
            let mut json = room.message(CAROL);
            json["room_id"] = json!("!elsewhere");
            json["auth_events"] = json!([]);
            room.check(&json)
        }),
        case("room id: an accepted create event's id (v12)", 12..=12, Refuse("rejected `m.room.create`"), |v| {
            let mut room = Room::new(v)?;
            room.events.get_mut(&Room::create_id(v)).expect("the create event").rejected = true;
            room.check(&room.message(CAROL))
        }),
        // 3. m.federate
        case("m.federate false: only the creator's server", VERSIONS, Allow, |v| {
            let mut room = Room::bare(v, json!({"m.federate": false}))?;
            room.join(ALICE)?;
            room.join_rule("public")?;
            room.try_member(BOB, BOB, "join")
        }),
        case("m.federate false: only the creator's server", VERSIONS, Refuse("room is not federated"), |v| {
            let mut room = Room::bare(v, json!({"m.federate": false}))?;
            room.join(ALICE)?;
            room.join_rule("public")?;
            room.try_member(CAROL, CAROL, "join")
        }),
        // 4. m.room.aliases (v1-v5)
        case("aliases: state_key is the sender's server (v1-v5)", 1..=5, Allow, |v| {
            Room::new(v)?.try_send(CAROL, "m.room.aliases", Some("b.example"), json!({"aliases": ["#c:b.example"]}))
        }),
        case(
            "aliases: state_key is the sender's server (v1-v5)",
            1..=5,
            Refuse("does not match the server name"),
            |v| {
                Room::new(v)?.try_send(CAROL, "m.room.aliases", Some("a.example"), json!({"aliases": ["#c:b.example"]}))
            },
        ),
        case(
            "aliases: state_key is the sender's server (v1-v5)",
            1..=5,
            Refuse("does not match the server name"),
            |v| Room::new(v)?.try_send(CAROL, "m.room.aliases", None, json!({"aliases": ["#c:b.example"]})),
        ),
        case("aliases: state_key is the sender's server (v1-v5)", 6..=12, Allow, |v| {
            Room::new(v)?.try_send(ALICE, "m.room.aliases", Some("b.example"), json!({"aliases": ["#c:b.example"]}))
        }),
        case("aliases: state_key is the sender's server (v1-v5)", 6..=12, Refuse("enough power to send event"), |v| {
            Room::new(v)?.try_send(CAROL, "m.room.aliases", Some("b.example"), json!({"aliases": ["#c:b.example"]}))
        }),
        // 5. m.room.member
        case("member: a state_key and a membership", VERSIONS, Allow, |v| {
            let content = json!({"membership": "join", "displayname": "c"});
            Room::new(v)?.try_send(CAROL, "m.room.member", Some(CAROL), content)
        }),
        case("member: a state_key and a membership", VERSIONS, Refuse("`membership` field"), |v| {
            Room::new(v)?.try_send(CAROL, "m.room.member", Some(CAROL), json!({"displayname": "c"}))
        }),
        case("member: a state_key and a membership", VERSIONS, Refuse("missing `state_key`"), |v| {
            Room::new(v)?.try_send(CAROL, "m.room.member", None, json!({"membership": "join"}))
        }),
        case("member: a known membership", VERSIONS, Allow, |v| Room::new(v)?.try_member(CAROL, CAROL, "leave")),
        case("member: a known membership", VERSIONS, Refuse("unknown membership"), |v| {
            Room::new(v)?.try_member(CAROL, CAROL, "dance")
        }),
        // 5.3 join
        case("join: the creator's first join right after the create event", VERSIONS, Allow, |v| {
            Room::bare(v, json!({}))?.try_member(ALICE, ALICE, "join")
        }),
        case(
            "join: the creator's first join right after the create event",
            VERSIONS,
            Refuse("`m.room.join_rules`"),
            |v| Room::bare(v, json!({}))?.try_member(BOB, BOB, "join"),
        ),
        case(
            "join: the creator's first join right after the create event",
            VERSIONS,
            Refuse("`m.room.join_rules`"),
            |v| {
                let room = Room::bare(v, json!({}))?;
                let mut json = room.event(ALICE, "m.room.member", Some(ALICE), json!({"membership": "join"}));
                json["prev_events"].as_array_mut().unwrap().push(json!(Room::event_id(v, "elsewhere")));
                room.check(&json)
            },
        ),
        case("join: the creator is the create event's sender (v11+)", 11..=12, Allow, |v| {
            Room::bare(v, json!({"creator": BOB}))?.try_member(ALICE, ALICE, "join")
        }),
        case("join: the creator is the create event's sender (v11+)", 11..=12, Refuse("`m.room.join_rules`"), |v| {
            Room::bare(v, json!({"creator": BOB}))?.try_member(BOB, BOB, "join")
        }),
        case("join: the creator is the create event's sender (v11+)", 1..=10, Allow, |v| {
            Room::bare(v, json!({"creator": BOB}))?.try_member(BOB, BOB, "join")
        }),
        case("join: the creator is the create event's sender (v11+)", 1..=10, Refuse("`m.room.join_rules`"), |v| {
            Room::bare(v, json!({"creator": BOB}))?.try_member(ALICE, ALICE, "join")
        }),
        case("join: the sender is the joining user", VERSIONS, Allow, |v| Room::new(v)?.try_member(DAN, DAN, "join")),
        case("join: the sender is the joining user", VERSIONS, Refuse("must match target user"), |v| {
            Room::new(v)?.try_member(CAROL, DAN, "join")
        }),
        case("join: a banned user cannot join", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.member(ALICE, DAN, "ban")?;
            room.member(ALICE, DAN, "leave")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: a banned user cannot join", VERSIONS, Refuse("banned user cannot join"), |v| {
            let mut room = Room::new(v)?;
            room.member(ALICE, DAN, "ban")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: invite rooms take the invited and the joined", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("invite")?;
            room.member(ALICE, DAN, "invite")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: invite rooms take the invited and the joined", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("invite")?;
            room.try_send(CAROL, "m.room.member", Some(CAROL), json!({"membership": "join", "displayname": "c"}))
        }),
        case("join: invite rooms take the invited and the joined", VERSIONS, Refuse("not `public`"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("invite")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: knock rooms take the invited (v7+)", 7..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.member(ALICE, DAN, "invite")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: knock rooms take the invited (v7+)", 7..=12, Refuse("not `public`"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: knock rooms take the invited (v7+)", 1..=6, Refuse("not `public`"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.member(ALICE, DAN, "invite")?;
            room.try_member(DAN, DAN, "join")
        }),
        case("join: restricted rooms take users a member who may invite authorised (v8+)", 8..=12, Allow, |v| {
            try_join_via(v, "restricted", Some(BOB))
        }),
        case("join: restricted rooms take users a member who may invite authorised (v8+)", 8..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.send(ALICE, "m.room.join_rules", Some(""), json!({"join_rule": "restricted", "allow": []}))?;
            room.member(ALICE, DAN, "invite")?;
            room.try_member(DAN, DAN, "join")
        }),
        case(
            "join: restricted rooms take users a member who may invite authorised (v8+)",
            8..=12,
            Refuse("without `join_authorised_via_users_server`"),
            |v| try_join_via(v, "restricted", None),
        ),
        case(
            "join: restricted rooms take users a member who may invite authorised (v8+)",
            8..=12,
            Refuse("`join_authorised_via_users_server` is not joined"),
            |v| try_join_via(v, "restricted", Some(ERIN)),
        ),
        case(
            "join: restricted rooms take users a member who may invite authorised (v8+)",
            8..=12,
            Refuse("`join_authorised_via_users_server` does not have enough power"),
            |v| try_join_via(v, "restricted", Some(CAROL)),
        ),
        case(
            "join: restricted rooms take users a member who may invite authorised (v8+)",
            1..=7,
            Refuse("not `public`"),
            |v| try_join_via(v, "restricted", Some(BOB)),
        ),
        case("join: knock_restricted rooms likewise (v10+)", 10..=12, Allow, |v| {
            try_join_via(v, "knock_restricted", Some(BOB))
        }),
        case(
            "join: knock_restricted rooms likewise (v10+)",
            10..=12,
            Refuse("`join_authorised_via_users_server` does not have enough power"),
            |v| try_join_via(v, "knock_restricted", Some(CAROL)),
        ),
        case("join: knock_restricted rooms likewise (v10+)", 1..=9, Refuse("not `public`"), |v| {
            try_join_via(v, "knock_restricted", Some(BOB))
        }),
        case("join: public rooms take anyone", VERSIONS, Allow, |v| Room::new(v)?.try_member(DAN, DAN, "join")),
        case("join: public rooms take anyone", VERSIONS, Refuse("not `public`"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("private")?;
            room.try_member(DAN, DAN, "join")
        }),
        // 5.4 invite
        case("invite: the sender is joined", VERSIONS, Allow, |v| Room::new(v)?.try_member(CAROL, DAN, "invite")),
        case("invite: the sender is joined", VERSIONS, Refuse("sender is not joined"), |v| {
            Room::new(v)?.try_member(ERIN, DAN, "invite")
        }),
        case("invite: the target is not joined or banned", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join(DAN)?;
            room.member(DAN, DAN, "leave")?;
            room.try_member(CAROL, DAN, "invite")
        }),
        case("invite: the target is not joined or banned", VERSIONS, Refuse("joined or banned"), |v| {
            Room::new(v)?.try_member(CAROL, BOB, "invite")
        }),
        case("invite: the target is not joined or banned", VERSIONS, Refuse("joined or banned"), |v| {
            let mut room = Room::new(v)?;
            room.member(ALICE, DAN, "ban")?;
            room.try_member(CAROL, DAN, "invite")
        }),
        case("invite: the sender has the invite level", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"invite": 50}))?;
            room.try_member(BOB, DAN, "invite")
        }),
        case("invite: the sender has the invite level", VERSIONS, Refuse("not have enough power to invite"), |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"invite": 50}))?;
            room.try_member(CAROL, DAN, "invite")
        }),
        // 5.4.1 third-party invites
        case("third-party invite: signed by a key of the room's third-party invite", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case(
            "third-party invite: signed by a key of the room's third-party invite",
            VERSIONS,
            Refuse("no signature on third-party invite matches"),
            |v| try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(2), false),
        ),
        case(
            "third-party invite: signed by a key of the room's third-party invite",
            VERSIONS,
            Refuse("missing `signatures`"),
            |v| try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), None, false),
        ),
        case("third-party invite: the target is not banned", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case(
            "third-party invite: the target is not banned",
            VERSIONS,
            Refuse("cannot invite user that is banned"),
            |v| try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), true),
        ),
        case("third-party invite: signed has an mxid and a token", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case("third-party invite: signed has an mxid and a token", VERSIONS, Refuse("missing `token`"), |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN}), Some(1), false)
        }),
        case("third-party invite: signed has an mxid and a token", VERSIONS, Refuse("missing `mxid`"), |v| {
            try_third_party(v, CAROL, DAN, json!({"token": "tok"}), Some(1), false)
        }),
        case("third-party invite: signed has an mxid and a token", VERSIONS, Refuse("`third_party_invite`"), |v| {
            let room = Room::new(v)?;
            let content = json!({"membership": "invite", "third_party_invite": {"display_name": "d"}});
            room.try_send(CAROL, "m.room.member", Some(DAN), content)
        }),
        case("third-party invite: the mxid is the state_key", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case("third-party invite: the mxid is the state_key", VERSIONS, Refuse("mxid does not match"), |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": ERIN, "token": "tok"}), Some(1), false)
        }),
        case("third-party invite: the token names a third-party invite", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case("third-party invite: the token names a third-party invite", VERSIONS, Refuse("matches the token"), |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "other"}), Some(1), false)
        }),
        case("third-party invite: sent by the third-party invite's sender", VERSIONS, Allow, |v| {
            try_third_party(v, CAROL, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false)
        }),
        case(
            "third-party invite: sent by the third-party invite's sender",
            VERSIONS,
            Refuse("does not match sender"),
            |v| try_third_party(v, BOB, DAN, json!({"mxid": DAN, "token": "tok"}), Some(1), false),
        ),
        // 5.5 leave
        case("leave: one's own from invite or join", VERSIONS, Allow, |v| {
            Room::new(v)?.try_member(CAROL, CAROL, "leave")
        }),
        case("leave: one's own from invite or join", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.member(CAROL, DAN, "invite")?;
            room.try_member(DAN, DAN, "leave")
        }),
        case("leave: one's own from invite or join", VERSIONS, Refuse("cannot leave if not joined"), |v| {
            Room::new(v)?.try_member(DAN, DAN, "leave")
        }),
        case("leave: one's own from invite or join", VERSIONS, Refuse("cannot leave if not joined"), |v| {
            let mut room = Room::new(v)?;
            room.member(ALICE, DAN, "ban")?;
            room.try_member(DAN, DAN, "leave")
        }),
        case("leave: one's own from knock (v7+)", 7..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.member(DAN, DAN, "knock")?;
            room.try_member(DAN, DAN, "leave")
        }),
        case("leave: one's own from knock (v7+)", 1..=6, Refuse("cannot leave if not joined"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            // Refused before v7: stored as if accepted, to see the leave's own rule.
            let knock = room.event(DAN, "m.room.member", Some(DAN), json!({"membership": "knock"}));
            let id = room.fresh_id();
            room.apply(id, &knock, false);
            room.try_member(DAN, DAN, "leave")
        }),
        case("kick: the sender is joined", VERSIONS, Allow, |v| Room::new(v)?.try_member(BOB, CAROL, "leave")),
        case("kick: the sender is joined", VERSIONS, Refuse("cannot kick if sender is not joined"), |v| {
            let mut room = Room::new(v)?;
            room.member(BOB, BOB, "leave")?;
            room.try_member(BOB, CAROL, "leave")
        }),
        case("unban: the sender has the ban level", VERSIONS, Allow, |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"ban": 75}))?;
            room.member(ALICE, DAN, "ban")?;
            room.try_member(ALICE, DAN, "leave")
        }),
        case("unban: the sender has the ban level", VERSIONS, Refuse("enough power to unban"), |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"ban": 75}))?;
            room.member(ALICE, DAN, "ban")?;
            room.try_member(BOB, DAN, "leave")
        }),
        case("kick: the kick level and a lower target", VERSIONS, Allow, |v| {
            Room::new(v)?.try_member(BOB, CAROL, "leave")
        }),
        case("kick: the kick level and a lower target", VERSIONS, Refuse("enough power to kick"), |v| {
            Room::new(v)?.try_member(CAROL, BOB, "leave")
        }),
        case("kick: the kick level and a lower target", VERSIONS, Refuse("enough power to kick"), |v| {
            Room::new(v)?.try_member(BOB, ALICE, "leave")
        }),
        case("kick: the kick level and a lower target", VERSIONS, Refuse("enough power to kick"), |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"users": {ERIN: 50}}))?;
            room.join(ERIN)?;
            room.try_member(BOB, ERIN, "leave")
        }),
        // 5.6 ban
        case("ban: the sender is joined", VERSIONS, Allow, |v| Room::new(v)?.try_member(BOB, CAROL, "ban")),
        case("ban: the sender is joined", VERSIONS, Refuse("cannot ban if sender is not joined"), |v| {
            let mut room = Room::new(v)?;
            room.member(BOB, BOB, "leave")?;
            room.try_member(BOB, CAROL, "ban")
        }),
        case("ban: the ban level and a lower target", VERSIONS, Allow, |v| Room::new(v)?.try_member(BOB, DAN, "ban")),
        case("ban: the ban level and a lower target", VERSIONS, Refuse("enough power to ban"), |v| {
            Room::new(v)?.try_member(CAROL, DAN, "ban")
        }),
        case("ban: the ban level and a lower target", VERSIONS, Refuse("enough power to ban"), |v| {
            Room::new(v)?.try_member(BOB, ALICE, "ban")
        }),
        // 5.7 knock (v7+)
        case("knock: the join rule is knock (v7+) or knock_restricted (v10+)", 7..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.try_member(DAN, DAN, "knock")
        }),
        case(
            "knock: the join rule is knock (v7+) or knock_restricted (v10+)",
            7..=12,
            Refuse("knocking is not allowed"),
            |v| Room::new(v)?.try_member(DAN, DAN, "knock"),
        ),
        case("knock: the join rule is knock (v7+) or knock_restricted (v10+)", 10..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock_restricted")?;
            room.try_member(DAN, DAN, "knock")
        }),
        case(
            "knock: the join rule is knock (v7+) or knock_restricted (v10+)",
            7..=9,
            Refuse("knocking is not allowed"),
            |v| {
                let mut room = Room::new(v)?;
                room.join_rule("knock_restricted")?;
                room.try_member(DAN, DAN, "knock")
            },
        ),
        case(
            "knock: the join rule is knock (v7+) or knock_restricted (v10+)",
            1..=6,
            Refuse("unknown membership"),
            |v| {
                let mut room = Room::new(v)?;
                room.join_rule("knock")?;
                room.try_member(DAN, DAN, "knock")
            },
        ),
        case("knock: the sender is the knocking user", 7..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.try_member(DAN, DAN, "knock")
        }),
        case("knock: the sender is the knocking user", 7..=12, Refuse("sender does not match target"), |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.try_member(CAROL, DAN, "knock")
        }),
        case("knock: not banned, invited or joined", 7..=12, Allow, |v| {
            let mut room = Room::new(v)?;
            room.join_rule("knock")?;
            room.member(CAROL, CAROL, "leave")?;
            room.try_member(CAROL, CAROL, "knock")
        }),
        case(
            "knock: not banned, invited or joined",
            7..=12,
            Refuse("cannot knock if user is banned, invited or joined"),
            |v| {
                let mut room = Room::new(v)?;
                room.join_rule("knock")?;
                room.try_member(CAROL, CAROL, "knock")
            },
        ),
        case(
            "knock: not banned, invited or joined",
            7..=12,
            Refuse("cannot knock if user is banned, invited or joined"),
            |v| {
                let mut room = Room::new(v)?;
                room.join_rule("knock")?;
                room.member(ALICE, DAN, "invite")?;
                room.try_member(DAN, DAN, "knock")
            },
        ),
        case(
            "knock: not banned, invited or joined",
            7..=12,
            Refuse("cannot knock if user is banned, invited or joined"),
            |v| {
                let mut room = Room::new(v)?;
                room.join_rule("knock")?;
                room.member(ALICE, DAN, "ban")?;
                room.try_member(DAN, DAN, "knock")
            },
        ),
        // 6. The sender's membership
        case("the sender is joined", VERSIONS, Allow, |v| {
            let room = Room::new(v)?;
            room.check(&room.message(CAROL))
        }),
        case("the sender is joined", VERSIONS, Refuse("sender's membership is not `join`"), |v| {
            let room = Room::new(v)?;
            room.check(&room.message(DAN))
        }),
        case("the sender is joined", VERSIONS, Refuse("sender's membership is not `join`"), |v| {
            let mut room = Room::new(v)?;
            room.member(CAROL, DAN, "invite")?;
            room.check(&room.message(DAN))
        }),
        case("the sender is joined", VERSIONS, Refuse("sender's membership is not `join`"), |v| {
            let mut room = Room::new(v)?;
            room.member(CAROL, CAROL, "leave")?;
            room.check(&room.message(CAROL))
        }),
        // 7. m.room.third_party_invite
        case("third_party_invite event: the sender has the invite level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_send(CAROL, "m.room.third_party_invite", Some("tok"), json!({"display_name": "d"}))
        }),
        case(
            "third_party_invite event: the sender has the invite level",
            VERSIONS,
            Refuse("enough power to send invites"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"invite": 50}))?;
                room.try_send(CAROL, "m.room.third_party_invite", Some("tok"), json!({"display_name": "d"}))
            },
        ),
        // 8. The event's required power level
        case("the sender has the event's power level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_send(BOB, "m.room.topic", Some(""), json!({"topic": "t"}))
        }),
        case(
            "the sender has the event's power level",
            VERSIONS,
            Refuse("enough power to send event of type `m.room.topic`"),
            |v| Room::new(v)?.try_send(CAROL, "m.room.topic", Some(""), json!({"topic": "t"})),
        ),
        case(
            "the sender has the event's power level",
            VERSIONS,
            Refuse("enough power to send event of type `m.room.message`"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"events": {"m.room.message": 10}}))?;
                room.check(&room.message(CAROL))
            },
        ),
        // 9. State keys naming users
        case("a state_key starting with @ is the sender's", VERSIONS, Allow, |v| {
            Room::new(v)?.try_send(BOB, "org.example.status", Some(BOB), json!({"status": "here"}))
        }),
        case("a state_key starting with @ is the sender's", VERSIONS, Refuse("matching another user's ID"), |v| {
            Room::new(v)?.try_send(BOB, "org.example.status", Some(CAROL), json!({"status": "here"}))
        }),
        // 10. m.room.power_levels
        case("power levels: the level fields are integers (v10+)", 10..=12, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"ban": 60}))
        }),
        case(
            "power levels: the level fields are integers (v10+)",
            10..=12,
            Refuse("unexpected format of `ban`"),
            |v| Room::new(v)?.try_power(ALICE, json!({"ban": "60"})),
        ),
        case("power levels: the level fields are integers (v10+)", 1..=9, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"ban": "60"}))
        }),
        case("power levels: events and notifications hold integers (v10+)", 10..=12, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"events": {"m.room.topic": 60}, "notifications": {"room": 60}}))
        }),
        case(
            "power levels: events and notifications hold integers (v10+)",
            10..=12,
            Refuse("unexpected format of `events`"),
            |v| Room::new(v)?.try_power(ALICE, json!({"events": {"m.room.topic": "60"}})),
        ),
        case(
            "power levels: events and notifications hold integers (v10+)",
            10..=12,
            Refuse("unexpected format of `notifications`"),
            |v| Room::new(v)?.try_power(ALICE, json!({"notifications": {"room": "60"}})),
        ),
        case("power levels: events and notifications hold integers (v10+)", 1..=9, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"events": {"m.room.topic": "60"}, "notifications": {"room": "60"}}))
        }),
        case("power levels: users are user ids with integer levels", VERSIONS, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {CAROL: 10}}))
        }),
        case("power levels: users are user ids with integer levels", VERSIONS, Refuse("`users`"), |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {"carol": 10}}))
        }),
        case("power levels: users are user ids with integer levels", 10..=12, Refuse("`users`"), |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {CAROL: "10"}}))
        }),
        case("power levels: users are user ids with integer levels", 1..=9, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {CAROL: "10"}}))
        }),
        case("power levels: users are user ids with integer levels", 1..=9, Refuse("`users`"), |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {CAROL: "ten"}}))
        }),
        case("power levels: creators are not in users (v12)", 12..=12, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({}))
        }),
        case(
            "power levels: creators are not in users (v12)",
            12..=12,
            Refuse("creator user IDs are not allowed"),
            |v| Room::new(v)?.try_power(ALICE, json!({"users": {ALICE: 100}})),
        ),
        case(
            "power levels: creators are not in users (v12)",
            12..=12,
            Refuse("creator user IDs are not allowed"),
            |v| {
                Room::with_create(v, json!({"additional_creators": [ERIN]}))?
                    .try_power(ALICE, json!({"users": {ERIN: 100}}))
            },
        ),
        case("power levels: creators are not in users (v12)", 1..=11, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {ALICE: 100}}))
        }),
        case("power levels: the first one is allowed", VERSIONS, Allow, |v| {
            let mut room = Room::bare(v, json!({}))?;
            room.join(ALICE)?;
            room.try_send(ALICE, "m.room.power_levels", Some(""), json!({"users": {BOB: 1_000_000}}))
        }),
        case("power levels: the first one is allowed", 1..=11, Refuse("`@bob:a.example`'s"), |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {BOB: 1_000_000}}))
        }),
        case("power levels: level fields changed within the sender's level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"kick": 40}))
        }),
        case(
            "power levels: level fields changed within the sender's level",
            VERSIONS,
            Refuse("power level of `ban`"),
            |v| Room::new(v)?.try_power(BOB, json!({"ban": 75})),
        ),
        case(
            "power levels: level fields changed within the sender's level",
            VERSIONS,
            Refuse("power level of `redact`"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"redact": 75}))?;
                room.try_power(BOB, json!({"redact": 50}))
            },
        ),
        case("power levels: events entries changed within the sender's level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"events": {"m.room.topic": 50}}))
        }),
        case(
            "power levels: events entries changed within the sender's level",
            VERSIONS,
            Refuse("`m.room.topic` event type"),
            |v| Room::new(v)?.try_power(BOB, json!({"events": {"m.room.topic": 75}})),
        ),
        case(
            "power levels: events entries changed within the sender's level",
            VERSIONS,
            Refuse("`m.room.name` event type"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"events": {"m.room.name": 75}}))?;
                room.try_power(BOB, json!({"events": {"m.room.name": 50}}))
            },
        ),
        case("power levels: notifications changed within the sender's level (v6+)", 6..=12, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"notifications": {"room": 50}}))
        }),
        case(
            "power levels: notifications changed within the sender's level (v6+)",
            6..=12,
            Refuse("`room` notification"),
            |v| Room::new(v)?.try_power(BOB, json!({"notifications": {"room": 75}})),
        ),
        case(
            "power levels: notifications changed within the sender's level (v6+)",
            6..=12,
            Refuse("`room` notification"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"notifications": {"room": 75}}))?;
                room.try_power(BOB, json!({"notifications": {"room": 50}}))
            },
        ),
        case("power levels: notifications changed within the sender's level (v6+)", 1..=5, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"notifications": {"room": 75}}))
        }),
        case("power levels: users changed within the sender's level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"users": {CAROL: 50}}))
        }),
        case("power levels: users changed within the sender's level", VERSIONS, Allow, |v| {
            Room::new(v)?.try_power(BOB, json!({"users": {BOB: 10}}))
        }),
        case("power levels: users changed within the sender's level", VERSIONS, Refuse("`@carol:b.example`'s"), |v| {
            Room::new(v)?.try_power(BOB, json!({"users": {CAROL: 75}}))
        }),
        case("power levels: users changed within the sender's level", VERSIONS, Refuse("`@erin:a.example`'s"), |v| {
            let mut room = Room::new(v)?;
            room.power(json!({"users": {ERIN: 50}}))?;
            room.try_power(BOB, json!({"users": {ERIN: null}}))
        }),
        case("power levels: creators have infinite power (v12)", 12..=12, Allow, |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {BOB: 1_000_000}}))
        }),
        case("power levels: creators have infinite power (v12)", 1..=11, Refuse("`@bob:a.example`'s"), |v| {
            Room::new(v)?.try_power(ALICE, json!({"users": {BOB: 1_000_000}}))
        }),
        case("additional creators have infinite power (v12)", 12..=12, Allow, |v| {
            let mut room = Room::with_create(v, json!({"additional_creators": [ERIN]}))?;
            room.join(ERIN)?;
            room.try_member(ERIN, BOB, "ban")
        }),
        case("additional creators have infinite power (v12)", VERSIONS, Refuse("enough power to ban"), |v| {
            let mut room = Room::new(v)?;
            room.join(ERIN)?;
            room.try_member(ERIN, BOB, "ban")
        }),
        case("additional creators have infinite power (v12)", 11..=11, Refuse("enough power to ban"), |v| {
            let mut room = Room::with_create(v, json!({"additional_creators": [ERIN]}))?;
            room.join(ERIN)?;
            room.try_member(ERIN, BOB, "ban")
        }),
        // 11. m.room.redaction (v1-v2)
        case("redaction: the redact level or the same server (v1-v2)", 1..=2, Allow, |v| {
            let room = Room::new(v)?;
            let mut json = room.event(BOB, "m.room.redaction", None, json!({}));
            json["redacts"] = json!("$target:b.example");
            room.check(&json)
        }),
        case("redaction: the redact level or the same server (v1-v2)", 1..=2, Allow, |v| {
            let room = Room::new(v)?;
            let mut json = room.event(CAROL, "m.room.redaction", None, json!({}));
            json["redacts"] = json!("$target:b.example");
            json["event_id"] = json!("$redaction:b.example");
            room.check(&json)
        }),
        case(
            "redaction: the redact level or the same server (v1-v2)",
            1..=2,
            Refuse("did not pass any of the allow rules"),
            |v| {
                let room = Room::new(v)?;
                let mut json = room.event(CAROL, "m.room.redaction", None, json!({}));
                json["redacts"] = json!("$target:a.example");
                json["event_id"] = json!("$redaction:b.example");
                room.check(&json)
            },
        ),
        case("redaction: the redact level or the same server (v1-v2)", 3..=12, Allow, |v| {
            let room = Room::new(v)?;
            let mut json = room.event(CAROL, "m.room.redaction", None, json!({"redacts": "$target"}));
            json["redacts"] = json!("$target");
            room.check(&json)
        }),
        case(
            "redaction: the redact level or the same server (v1-v2)",
            3..=12,
            Refuse("enough power to send event of type `m.room.redaction`"),
            |v| {
                let mut room = Room::new(v)?;
                room.power(json!({"events": {"m.room.redaction": 50}}))?;
                let mut json = room.event(CAROL, "m.room.redaction", None, json!({"redacts": "$target"}));
                json["redacts"] = json!("$target");
                room.check(&json)
            },
        ),
    ]
}

/// Every row, in every version it is about, ends as it says; a refusal for
/// a reason other than the row's rule, or a broken setup, fails too.
#[test]
fn every_auth_rule_allows_and_refuses_in_every_version() {
    let mut failures = Vec::new();
    let mut runs = 0;
    for case in cases() {
        for v in case.versions.clone() {
            runs += 1;
            let outcome = (case.event)(v);
            let ok = match (&outcome, case.expect) {
                (Err(reason), _) if reason.starts_with("setup:") => false,
                (Ok(()), Allow) => true,
                (Err(reason), Refuse(fragment)) => reason.contains(fragment),
                _ => false,
            };
            if !ok {
                failures.push(format!("v{v} {}: expected {:?}, got {outcome:?}", case.rule, case.expect));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {runs} checks failed:\n{}", failures.len(), failures.join("\n"));
}

/// Each rule has a row that allows and a row that refuses, and every room
/// version has rows.
#[test]
fn every_rule_has_an_allowed_and_a_refused_case() {
    let mut seen: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    let mut versions = BTreeSet::new();
    for case in cases() {
        let entry = seen.entry(case.rule).or_default();
        match case.expect {
            Allow => entry.0 = true,
            Refuse(_) => entry.1 = true,
        }
        versions.extend(case.versions);
    }
    let lacking: Vec<&&str> =
        seen.iter().filter(|(_, (allow, refuse))| !(*allow && *refuse)).map(|(rule, _)| rule).collect();
    assert!(lacking.is_empty(), "rules without both outcomes: {lacking:?}");
    assert_eq!(versions, VERSIONS.collect::<BTreeSet<_>>());
}

/// A create event of a version this server does not know: no rules to check
/// anything with, so the room cannot be taken on.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v1/#authorization-rules> (1.3)
#[test]
fn an_unknown_room_version_is_refused() {
    let unknown = RoomVersionId::try_from("999").unwrap();
    let refused = RemoteRoom::new("!room:a.example".try_into().unwrap(), unknown);
    assert!(matches!(refused, Err(RequestError::UnsupportedRoomVersion(v)) if v == "999"));
    let known = RemoteRoom::new("!room:a.example".try_into().unwrap(), RoomVersionId::V11);
    assert!(known.is_ok());
}

/// A join through a restricted room's member, as this server receives it:
/// from room version 8 the authorising user's server must have signed it
/// (rule 5.2, checked with the signatures in [`super::receive`]); before,
/// the field means nothing.
///
/// Spec: <https://spec.matrix.org/v1.16/rooms/v8/#authorization-rules>
#[test]
fn join_authorised_via_users_server_must_be_signed_by_that_server() {
    let signer = super::Signer { server_name: "a.example".try_into().unwrap(), key: fixed_key(1) };
    let keys = super::receive::KeyRing::new(&signer);
    let receive = |v: u8, via: &str| {
        let version = RoomVersionId::try_from(v.to_string()).unwrap();
        let rules = version.rules().unwrap();
        let room_id: OwnedRoomId = "!room:a.example".try_into().unwrap();
        let sender = UserId::parse(ERIN).unwrap();
        let content = json!({"membership": "join", "join_authorised_via_users_server": via});
        let draft = super::build::Draft {
            room_id: Some(&room_id),
            sender: &sender,
            event_type: "m.room.member",
            state_key: Some(ERIN),
            content: &content,
            prev_events: vec![Room::event_id(v, "prev")],
            auth_events: Vec::new(),
            reference_hashes: HashMap::new(),
            depth: 2,
            origin_server_ts: 2,
        };
        let built = super::build::build(&signer, &rules, draft).expect("built");
        let parsed = super::receive::parse(serde_json::from_str(&built.json).unwrap(), &room_id, &rules)?;
        parsed.verify(&keys, &rules).map(|_| ())
    };
    for v in VERSIONS {
        // Bob's server is the sender's, which signed.
        assert!(receive(v, BOB).is_ok(), "v{v}");
        // Carol's server did not sign.
        let unsigned = receive(v, CAROL);
        if v >= 8 {
            let reason = unsigned.expect_err("refused").reason;
            assert!(reason.contains("signature check failed"), "v{v}: {reason}");
        } else {
            assert!(unsigned.is_ok(), "v{v}: {unsigned:?}");
        }
    }
}
