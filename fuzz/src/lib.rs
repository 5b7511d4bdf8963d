//! What the fuzz targets share: the room version an input picks, and the
//! fixed room the auth target checks events against.

use std::collections::HashMap;
use std::sync::OnceLock;

use myelin_roomserver::checks::{EventMap, IdState, Pdu, Signer};
use myelin_types::ruma::room_version_rules::RoomVersionRules;
use myelin_types::ruma::{EventId, OwnedServerName, RoomVersionId};
use myelin_types::signing::ServerSigningKey;
use serde_json::{Value, json};

/// The room every fixed event and seed lives in.
pub const ROOM: &str = "!room:example.org";
/// The server of every seed's users, whose key the harness signs with.
pub const SERVER: &str = "example.org";

/// Room versions 1 to 12, picked by the input's first byte modulo 12
/// (`'0'`..`'9'` are v1..v10, `':'` v11, `';'` v12), and the rest of the input.
pub fn split_version(data: &[u8]) -> Option<(RoomVersionId, RoomVersionRules, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let version = RoomVersionId::try_from((first % 12 + 1).to_string()).ok()?;
    let rules = version.rules()?;
    Some((version, rules, rest))
}

/// A signer for [`SERVER`] with a key made once per process.
pub fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| Signer {
        server_name: OwnedServerName::try_from(SERVER).expect("valid server name"),
        key: ServerSigningKey::parse(&ServerSigningKey::generate_file_contents()).expect("fresh key parses"),
    })
}

/// A small room's state: creator alice (power 100), bob (50) joined, public
/// join rules, carol invited, dave banned; the events by id and the state.
pub struct FixedRoom {
    pub events: EventMap,
    pub state: IdState,
}

fn user(name: &str) -> String {
    format!("@{name}:{SERVER}")
}

impl FixedRoom {
    /// The fixed room of `version`, built once per process.
    pub fn of(version: &RoomVersionId) -> &'static Self {
        static ROOMS: OnceLock<HashMap<RoomVersionId, FixedRoom>> = OnceLock::new();
        let rooms = ROOMS.get_or_init(|| {
            (1..=12u8)
                .filter_map(|n| RoomVersionId::try_from(n.to_string()).ok())
                .filter_map(|version| Some((version.clone(), Self::new(&version, &version.rules()?))))
                .collect()
        });
        &rooms[version]
    }

    fn new(version: &RoomVersionId, rules: &RoomVersionRules) -> Self {
        let alice = user("alice");
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        // From v12 the create event's id is the room id (with `$`), and it is never cited.
        let create_id = if v12 { format!("${}", &ROOM[1..]) } else { "$create".to_owned() };
        let cite = |ids: &[&str]| -> Vec<String> {
            ids.iter()
                .map(|id| if *id == "$create" { create_id.clone() } else { (*id).to_owned() })
                .filter(|id| !(v12 && *id == create_id))
                .collect()
        };
        let mut create_content = json!({"room_version": version.as_str()});
        if !rules.authorization.use_room_create_sender {
            create_content["creator"] = json!(alice);
        }
        let member = |sender: &str, target: &str, membership: &str| {
            ("m.room.member", sender.to_owned(), user(target), json!({"membership": membership}))
        };
        let fixed = [
            ("$create", ("m.room.create", alice.clone(), String::new(), create_content), cite(&[])),
            ("$alice", member(&alice, "alice", "join"), cite(&["$create"])),
            (
                "$power",
                (
                    "m.room.power_levels",
                    alice.clone(),
                    String::new(),
                    json!({"users": {&alice: 100, user("bob"): 50}, "events": {"m.room.name": 50}}),
                ),
                cite(&["$create", "$alice"]),
            ),
            (
                "$rules",
                ("m.room.join_rules", alice.clone(), String::new(), json!({"join_rule": "public"})),
                cite(&["$create", "$alice", "$power"]),
            ),
            ("$bob", member(&user("bob"), "bob", "join"), cite(&["$create", "$power", "$rules"])),
            ("$carol", member(&alice, "carol", "invite"), cite(&["$create", "$alice", "$power", "$rules"])),
            ("$dave", member(&alice, "dave", "ban"), cite(&["$create", "$alice", "$power"])),
        ];
        let mut room = Self { events: EventMap::default(), state: IdState::new() };
        for (depth, (id, (kind, sender, key, content), auth)) in fixed.into_iter().enumerate() {
            let id = if id == "$create" { create_id.clone() } else { id.to_owned() };
            let mut pdu = json!({
                "type": kind, "sender": sender, "state_key": key, "content": content,
                "auth_events": auth, "prev_events": [], "depth": depth + 1, "origin_server_ts": depth + 1,
            });
            if !(v12 && kind == "m.room.create") {
                pdu["room_id"] = json!(ROOM);
            }
            let id = EventId::parse(&id).expect("valid event id");
            room.state.insert((kind.to_owned(), key), id.clone());
            room.events.insert(id.clone(), Pdu::parse(id, &pdu.to_string()).expect("fixed event parses"));
        }
        room
    }
}

/// The input as a JSON value, if it is JSON at all.
pub fn json(data: &[u8]) -> Option<Value> {
    serde_json::from_slice(data).ok()
}
