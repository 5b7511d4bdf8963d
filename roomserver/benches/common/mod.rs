//! A large room built in memory the way the room server holds it while
//! resolving state: every event parsed into a [`Pdu`], each fork's state as
//! an [`IdState`]. Events cite the auth events the rules select from their
//! fork's state, so resolution does the work it does on a real room.

use myelin_roomserver::checks::{EventMap, IdState, Pdu};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedEventId, RoomVersionId, UserId};
use serde_json::{Value, json};

pub const ALICE: &str = "@alice:example.org";

pub fn member(n: usize) -> String {
    format!("@user{n}:example.org")
}

/// One line of history: the state after its latest event.
#[derive(Clone)]
pub struct Fork {
    pub state: IdState,
    tip: Option<OwnedEventId>,
    depth: i64,
    ts: u64,
}

pub struct BigRoom {
    pub rules: RoomVersionRules,
    pub events: EventMap,
    room_id: String,
    next: u64,
}

impl BigRoom {
    /// Create (alice), alice's join, power levels (alice 100, or creator
    /// from v12), public join rules, then `members` joins.
    pub fn new(version: RoomVersionId, members: usize) -> (Self, Fork) {
        let rules = version.rules().expect("known version");
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        let create_id = event_id(0);
        let room_id = if v12 { format!("!{}", &create_id.as_str()[1..]) } else { "!big:example.org".to_owned() };
        let mut room = Self { rules, events: EventMap::default(), room_id, next: 0 };
        let mut fork = Fork { state: IdState::new(), tip: None, depth: 0, ts: 1 };
        let mut create = json!({"room_version": version.as_str()});
        let mut users = json!({});
        if !v12 {
            create["creator"] = json!(ALICE);
            // From v12 the creator's power is implied and may not be listed.
            users[ALICE] = json!(100);
        }
        room.add(&mut fork, ALICE, "m.room.create", "", create);
        room.add(&mut fork, ALICE, "m.room.member", ALICE, json!({"membership": "join"}));
        let levels = json!({"users": users, "ban": 50, "kick": 50, "state_default": 50});
        room.add(&mut fork, ALICE, "m.room.power_levels", "", levels);
        room.add(&mut fork, ALICE, "m.room.join_rules", "", json!({"join_rule": "public"}));
        for n in 0..members {
            room.add(&mut fork, &member(n), "m.room.member", &member(n), json!({"membership": "join"}));
        }
        (room, fork)
    }

    /// Append a state event to `fork`, citing the auth events its state gives.
    pub fn add(&mut self, fork: &mut Fork, sender: &str, kind: &str, key: &str, content: Value) -> OwnedEventId {
        let id = event_id(self.next);
        self.next += 1;
        let raw = serde_json::value::to_raw_value(&content).expect("JSON");
        let sender_id = <&UserId>::try_from(sender).expect("valid user id");
        let wanted =
            ruma::state_res::auth_types_for_event(&kind.into(), sender_id, Some(key), &raw, &self.rules.authorization)
                .expect("auth types");
        let auth: Vec<&OwnedEventId> =
            wanted.iter().filter_map(|(kind, key)| fork.state.get(&(kind.to_string(), key.clone()))).collect();
        fork.ts += 1;
        let mut pdu = json!({
            "sender": sender, "type": kind, "state_key": key, "content": content,
            "prev_events": fork.tip.iter().collect::<Vec<_>>(), "auth_events": auth,
            "origin_server_ts": fork.ts, "depth": fork.depth + 1,
        });
        if !(kind == "m.room.create" && self.rules.authorization.room_create_event_id_as_room_id) {
            pdu["room_id"] = json!(self.room_id);
        }
        let pdu = Pdu::parse(id.clone(), &pdu.to_string()).expect("event parses");
        self.events.insert(id.clone(), pdu);
        fork.state.insert((kind.to_owned(), key.to_owned()), id.clone());
        fork.tip = Some(id.clone());
        fork.depth += 1;
        id
    }

    /// Two forks off `base`, each with `changes` state changes to the same
    /// members, so every one of them conflicts: on the first every tenth
    /// member is banned and the others rename themselves; on the second
    /// (later) every tenth member, another one, is kicked and the others
    /// rename themselves differently.
    pub fn conflicting_forks(&mut self, base: &Fork, changes: usize) -> (Fork, Fork) {
        let (mut first, mut second) = (base.clone(), base.clone());
        second.ts += 1_000_000;
        for n in 0..changes {
            let user = member(n);
            if n % 10 == 0 {
                self.add(&mut first, ALICE, "m.room.member", &user, json!({"membership": "ban"}));
            } else {
                let content = json!({"membership": "join", "displayname": format!("first {n}")});
                self.add(&mut first, &user, "m.room.member", &user, content);
            }
            if n % 10 == 5 {
                self.add(&mut second, ALICE, "m.room.member", &user, json!({"membership": "leave"}));
            } else {
                let content = json!({"membership": "join", "displayname": format!("second {n}")});
                self.add(&mut second, &user, "m.room.member", &user, content);
            }
        }
        (first, second)
    }
}

/// Event ids as long as real ones (43 characters after the sigil).
fn event_id(n: u64) -> OwnedEventId {
    EventId::parse(format!("${n:0>43}")).expect("valid event id")
}
