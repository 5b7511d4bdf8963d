//! Which application services an event concerns, decided on the event and
//! the room as it stands just after it (pure; the consumer loads the room).
//!
//! Spec: <https://spec.matrix.org/v1.16/application-service-api/#registration>
//! (namespaces) and <https://spec.matrix.org/v1.16/application-service-api/#pushing-events>.
//!
//! A service is interested when the sender is one of its users (or its
//! sender), the event is the membership of one of its users, the room id
//! is in its rooms namespace, one of the room's aliases (canonical or
//! alternative) is in its aliases namespace, or one of its users is a
//! member of the room (joined or invited). The spec's users namespace
//! covers local users only, so other servers' users never count.

use std::collections::BTreeSet;

use myelin_config::appservice::AppService;
use myelin_roomserver::api::StateDelta;
use myelin_types::ruma::{ServerName, UserId};
use serde_json::Value;

const MEMBER: &str = "m.room.member";
const CANONICAL_ALIAS: &str = "m.room.canonical_alias";

/// Whether `user_id` is a valid user id of this server.
pub fn is_local(user_id: &str, server_name: &ServerName) -> bool {
    UserId::parse(user_id).is_ok_and(|user| user.server_name() == server_name)
}

/// A local user of `service`'s namespaces (its sender included).
fn is_local_user_of(service: &AppService, user_id: &str, server_name: &ServerName) -> bool {
    service.is_user_in_namespace(user_id) && is_local(user_id, server_name)
}

/// What interest looks at in an event.
#[derive(Debug)]
pub struct EventFacts<'a> {
    pub room_id: &'a str,
    pub sender: &'a str,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
}

impl<'a> EventFacts<'a> {
    pub fn of(pdu: &'a Value, room_id: &'a str) -> Self {
        let text = |key: &str| pdu.get(key).and_then(Value::as_str);
        Self {
            room_id,
            sender: text("sender").unwrap_or_default(),
            event_type: text("type").unwrap_or_default(),
            state_key: text("state_key"),
        }
    }

    /// Interest that needs no member list: sender, membership subject,
    /// room id and the room's aliases.
    pub fn concerns(&self, service: &AppService, aliases: &[String], server_name: &ServerName) -> bool {
        is_local_user_of(service, self.sender, server_name)
            || (self.event_type == MEMBER
                && self.state_key.is_some_and(|user| is_local_user_of(service, user, server_name)))
            || service.is_room_in_namespace(self.room_id)
            || aliases.iter().any(|alias| service.is_alias_in_namespace(alias))
    }
}

/// Interest through membership: one of the service's users is in the room.
/// `members` holds local users only.
pub fn has_member(service: &AppService, members: &BTreeSet<String>) -> bool {
    members.iter().any(|user| service.is_user_in_namespace(user))
}

/// How an event changed what interest reads of its room.
#[derive(Debug, Default, PartialEq)]
pub struct RoomChanges {
    /// Local users whose membership changed: `true` when they are now
    /// joined or invited, `false` when they are neither any more.
    pub members: Vec<(String, bool)>,
    /// The room's aliases (canonical first, then the alternatives), when
    /// `m.room.canonical_alias` changed; empty when it went away.
    pub aliases: Option<Vec<String>>,
}

impl RoomChanges {
    /// What the state delta changes, for local users' memberships and the
    /// aliases. Every registration's namespaces may match any local user,
    /// so all local memberships are kept, whatever the registrations say
    /// today: a namespace added later finds its users' rooms.
    pub fn of(delta: &StateDelta, server_name: &ServerName) -> Self {
        let mut changes = Self::default();
        for added in &delta.added {
            let pdu = &added.pdu;
            let event_type = pdu.get("type").and_then(Value::as_str);
            let state_key = pdu.get("state_key").and_then(Value::as_str);
            let content = pdu.get("content");
            match (event_type, state_key) {
                (Some(MEMBER), Some(user)) if is_local(user, server_name) => {
                    let membership = content.and_then(|c| c.get("membership")).and_then(Value::as_str);
                    changes.members.push((user.to_owned(), matches!(membership, Some("join" | "invite"))));
                }
                (Some(CANONICAL_ALIAS), Some("")) => changes.aliases = Some(aliases_of(content)),
                _ => {}
            }
        }
        for (event_type, state_key) in &delta.removed {
            match event_type.as_str() {
                MEMBER if is_local(state_key, server_name) => changes.members.push((state_key.clone(), false)),
                CANONICAL_ALIAS if state_key.is_empty() => changes.aliases = Some(Vec::new()),
                _ => {}
            }
        }
        changes
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.aliases.is_none()
    }

    /// `members` as they are after these changes.
    pub fn apply_to(&self, members: &mut BTreeSet<String>) {
        for (user, present) in &self.members {
            if *present {
                members.insert(user.clone());
            } else {
                members.remove(user);
            }
        }
    }
}

/// `alias` and `alt_aliases` of a canonical alias event's content; entries
/// that are not strings are ignored, as clients ignore them.
fn aliases_of(content: Option<&Value>) -> Vec<String> {
    let Some(content) = content else { return Vec::new() };
    let canonical = content.get("alias").and_then(Value::as_str);
    let alternatives =
        content.get("alt_aliases").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
    canonical.into_iter().chain(alternatives).map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use myelin_roomserver::api::StoredEvent;
    use serde_json::json;

    use super::*;

    const SERVER: &str = "example.org";

    fn service(yaml: &str) -> AppService {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("as.yaml");
        std::fs::write(&path, yaml).unwrap();
        myelin_config::appservice::load_app_services(&[path], SERVER).unwrap().remove(0)
    }

    fn bridge() -> AppService {
        service(
            r##"
id: bridge
url: "http://127.0.0.1:9"
as_token: a
hs_token: h
sender_localpart: _bridge_bot
namespaces:
  users: [{exclusive: true, regex: "@_bridge_.*"}]
  aliases: [{exclusive: false, regex: "#_bridge_.*"}]
  rooms: [{exclusive: false, regex: "!bridged"}]
"##,
        )
    }

    fn server() -> &'static ServerName {
        <&ServerName>::try_from(SERVER).unwrap()
    }

    fn stored(pdu: Value) -> StoredEvent {
        StoredEvent { event_id: "$e".try_into().unwrap(), room_id: "!r:example.org".try_into().unwrap(), pdu }
    }

    #[test]
    fn senders_subjects_rooms_and_aliases_concern_a_service() {
        let bridge = bridge();
        let message = |sender: &str, room_id: &'static str| json!({"type": "m.room.message", "sender": sender, "room_id": room_id});
        let pdu = message("@_bridge_a:example.org", "!r");
        assert!(EventFacts::of(&pdu, "!r").concerns(&bridge, &[], server()));
        let pdu = message("@_bridge_bot:example.org", "!r");
        assert!(EventFacts::of(&pdu, "!r").concerns(&bridge, &[], server()), "its sender");
        let pdu = message("@_bridge_a:elsewhere.org", "!r");
        assert!(!EventFacts::of(&pdu, "!r").concerns(&bridge, &[], server()), "other servers' users do not count");
        let pdu = message("@alice:example.org", "!bridged:example.org");
        assert!(EventFacts::of(&pdu, "!bridged:example.org").concerns(&bridge, &[], server()));
        let pdu = message("@alice:example.org", "!r");
        assert!(!EventFacts::of(&pdu, "!r").concerns(&bridge, &[], server()));
        assert!(EventFacts::of(&pdu, "!r").concerns(&bridge, &["#_bridge_x:example.org".to_owned()], server()));
        let invite =
            json!({"type": "m.room.member", "sender": "@alice:example.org", "state_key": "@_bridge_b:example.org"});
        assert!(EventFacts::of(&invite, "!r").concerns(&bridge, &[], server()));
    }

    #[test]
    fn members_count_only_when_in_the_namespace() {
        let bridge = bridge();
        let mut members = BTreeSet::from(["@alice:example.org".to_owned()]);
        assert!(!has_member(&bridge, &members));
        members.insert("@_bridge_c:example.org".to_owned());
        assert!(has_member(&bridge, &members));
    }

    #[test]
    fn deltas_change_local_memberships_and_aliases() {
        let member = |user: &str, membership: &str| {
            stored(json!({"type": "m.room.member", "state_key": user, "content": {"membership": membership}}))
        };
        let delta = StateDelta {
            added: vec![
                member("@a:example.org", "join"),
                member("@b:example.org", "leave"),
                member("@c:elsewhere.org", "join"),
                member("@d:example.org", "invite"),
                stored(json!({"type": "m.room.canonical_alias", "state_key": "",
                    "content": {"alias": "#a:example.org", "alt_aliases": ["#b:example.org", 3]}})),
            ],
            removed: vec![("m.room.member".to_owned(), "@e:example.org".to_owned())],
        };
        let changes = RoomChanges::of(&delta, server());
        let expected =
            [("@a:example.org", true), ("@b:example.org", false), ("@d:example.org", true), ("@e:example.org", false)];
        assert_eq!(changes.members, expected.map(|(u, p)| (u.to_owned(), p)));
        assert_eq!(changes.aliases, Some(vec!["#a:example.org".to_owned(), "#b:example.org".to_owned()]));
        let mut members = BTreeSet::from(["@b:example.org".to_owned(), "@e:example.org".to_owned()]);
        changes.apply_to(&mut members);
        assert_eq!(members, BTreeSet::from(["@a:example.org".to_owned(), "@d:example.org".to_owned()]));
    }
}
