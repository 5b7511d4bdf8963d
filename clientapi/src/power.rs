//! Whether a user may send a state event, from the room's current state:
//! the power levels (<https://spec.matrix.org/v1.16/client-server-api/#mroompower_levels>),
//! and in room version 12 the creators' unlimited power. The room server
//! decides for the events it builds; the client API asks only for actions
//! that are not events, such as deleting an alias or publishing a room.

use myelin_roomserver::api::StoredEvent;
use myelin_types::ruma::UserId;
use serde_json::Value;

/// A power level as stored: an integer, or a string of one in old rooms.
fn level(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn find<'a>(state: &'a [StoredEvent], event_type: &str) -> Option<&'a Value> {
    state
        .iter()
        .map(|e| &e.pdu)
        .find(|pdu| pdu["type"] == event_type && pdu["state_key"] == "")
        .map(|pdu| &pdu["content"])
}

/// Whether `user` has the power to send a state event of `event_type` in
/// the room whose current state is `state`.
pub fn may_send_state(state: &[StoredEvent], user: &UserId, event_type: &str) -> bool {
    let create = state.iter().map(|e| &e.pdu).find(|pdu| pdu["type"] == "m.room.create" && pdu["state_key"] == "");
    let creator = create.and_then(|c| c["sender"].as_str()) == Some(user.as_str());
    // Room versions 12 on: creators (the sender and `additional_creators`) outrank everyone.
    if let Some(create) = create
        && create["content"]["room_version"] == "12"
        && (creator
            || create["content"]["additional_creators"]
                .as_array()
                .is_some_and(|more| more.iter().any(|c| c.as_str() == Some(user.as_str()))))
    {
        return true;
    }
    let Some(levels) = find(state, "m.room.power_levels") else {
        // Without power levels the creator has 100 and everyone 0, and state needs 0.
        return true;
    };
    let user_level = level(levels["users"].get(user.as_str())).or(level(levels.get("users_default"))).unwrap_or(0);
    let needed = level(levels["events"].get(event_type)).or(level(levels.get("state_default"))).unwrap_or(50);
    user_level >= needed
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(pdu: Value) -> StoredEvent {
        StoredEvent { event_id: "$e".try_into().unwrap(), room_id: "!r:x".try_into().unwrap(), pdu }
    }

    fn room(version: &str, levels: Value) -> Vec<StoredEvent> {
        vec![
            event(json!({"type": "m.room.create", "state_key": "", "sender": "@c:x",
                         "content": {"room_version": version, "additional_creators": ["@d:x"]}})),
            event(json!({"type": "m.room.power_levels", "state_key": "", "sender": "@c:x", "content": levels})),
        ]
    }

    fn user(id: &str) -> &UserId {
        <&UserId>::try_from(id).unwrap()
    }

    #[test]
    fn levels_decide_and_v12_creators_always_may() {
        let levels = json!({"users": {"@a:x": 50, "@m:x": "100"}, "events": {"m.room.canonical_alias": 100}});
        let v11 = room("11", levels.clone());
        assert!(may_send_state(&v11, user("@m:x"), "m.room.canonical_alias"));
        assert!(!may_send_state(&v11, user("@a:x"), "m.room.canonical_alias"));
        assert!(may_send_state(&v11, user("@a:x"), "m.room.topic"));
        assert!(!may_send_state(&v11, user("@c:x"), "m.room.canonical_alias"));
        assert!(!may_send_state(&v11, user("@z:x"), "m.room.topic"));
        let v12 = room("12", levels);
        assert!(may_send_state(&v12, user("@c:x"), "m.room.canonical_alias"));
        assert!(may_send_state(&v12, user("@d:x"), "m.room.canonical_alias"));
        assert!(!may_send_state(&v12, user("@a:x"), "m.room.canonical_alias"));
    }
}
