//! Turning a PDU (the federation form the room server stores and emits)
//! into the event format clients see.

use serde_json::{Map, Value};

/// Keys of a PDU that clients see; the rest (hashes, signatures,
/// auth_events, prev_events, depth, origin) is federation plumbing.
const CLIENT_KEYS: &[&str] = &["content", "origin_server_ts", "sender", "state_key", "type", "unsigned", "redacts"];

/// The [client event format] of `pdu`. PDUs of room versions 3+ carry no
/// `event_id`, and v12 create events no `room_id`, so both are given.
///
/// [client event format]: https://spec.matrix.org/v1.16/client-server-api/#room-event-format
pub fn client_event(pdu: &Value, event_id: &str, room_id: &str) -> Value {
    let mut event = Map::new();
    if let Value::Object(fields) = pdu {
        for key in CLIENT_KEYS {
            if let Some(value) = fields.get(*key) {
                event.insert((*key).to_owned(), value.clone());
            }
        }
    }
    copy_redacts_to_the_top_level(&mut event);
    event.insert("event_id".to_owned(), Value::String(event_id.to_owned()));
    event.insert("room_id".to_owned(), Value::String(room_id.to_owned()));
    Value::Object(event)
}

/// From room version 11 a redaction names its target in `content.redacts`
/// only; clients written before (matrix-js-sdk among them) read the top-level
/// key, which servers should therefore add when serving the event.
/// <https://spec.matrix.org/v1.16/rooms/v11/#moving-the-redacts-key>
fn copy_redacts_to_the_top_level(event: &mut Map<String, Value>) {
    if event.get("type").and_then(Value::as_str) != Some("m.room.redaction") || event.contains_key("redacts") {
        return;
    }
    if let Some(redacts @ Value::String(_)) = event.get("content").and_then(|content| content.get("redacts")) {
        let redacts = redacts.clone();
        event.insert("redacts".to_owned(), redacts);
    }
}

/// The client event without `room_id`, as `/sync` nests events under rooms.
pub fn sync_event(pdu: &Value, event_id: &str) -> Value {
    let mut event = client_event(pdu, event_id, "");
    if let Value::Object(fields) = &mut event {
        fields.remove("room_id");
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn federation_fields_are_dropped_and_ids_added() {
        let pdu = json!({
            "type": "m.room.message", "sender": "@a:x", "content": {"body": "hi"},
            "origin_server_ts": 5, "depth": 3, "prev_events": [], "auth_events": [],
            "hashes": {"sha256": "x"}, "signatures": {}, "room_id": "!r:x"
        });
        let event = client_event(&pdu, "$e", "!r:x");
        assert_eq!(
            event,
            json!({
                "type": "m.room.message", "sender": "@a:x", "content": {"body": "hi"},
                "origin_server_ts": 5, "event_id": "$e", "room_id": "!r:x"
            })
        );
        let nested = sync_event(&pdu, "$e");
        assert!(nested.get("room_id").is_none());
        assert_eq!(nested["event_id"], "$e");
    }

    #[test]
    fn v11_redactions_also_name_their_target_at_the_top_level() {
        let redaction = json!({"type": "m.room.redaction", "sender": "@a:x", "content": {"redacts": "$target"}});
        assert_eq!(client_event(&redaction, "$r", "!r:x")["redacts"], "$target");
        assert_eq!(sync_event(&redaction, "$r")["redacts"], "$target");

        // Before v11 the top-level key is the PDU's own, and wins.
        let old = json!({"type": "m.room.redaction", "redacts": "$old", "content": {"redacts": "$other"}});
        assert_eq!(client_event(&old, "$r", "!r:x")["redacts"], "$old");
        // Only redactions get the key, and only from a string.
        let message = json!({"type": "m.room.message", "content": {"redacts": "$target"}});
        assert!(client_event(&message, "$m", "!r:x").get("redacts").is_none());
        let odd = json!({"type": "m.room.redaction", "content": {"redacts": 5}});
        assert!(client_event(&odd, "$r", "!r:x").get("redacts").is_none());
    }

    #[test]
    fn state_key_survives_even_when_empty() {
        let pdu =
            json!({"type": "m.room.name", "state_key": "", "content": {}, "sender": "@a:x", "origin_server_ts": 1});
        assert_eq!(client_event(&pdu, "$e", "!r:x")["state_key"], "");
    }
}
