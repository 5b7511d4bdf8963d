//! What a push gateway may learn about an event (DESIGN.md invariant 9):
//! the smallest of the server's `pusher.content`, the pusher's own
//! `data.format` and, in encrypted rooms, `event_id_only`. Then the
//! notification body for that level, per
//! <https://spec.matrix.org/v1.16/push-gateway-api/#post_matrixpushv1notify>:
//!
//! | level | `notification` keys |
//! | --- | --- |
//! | `full` | `event_id`, `room_id`, `type`, `sender`, `sender_display_name`, `room_name`, `content`, `counts`, `devices`, `prio` (+ `user_is_target` for member events) |
//! | `metadata` | the same without `content` |
//! | `event_id_only` | `event_id`, `room_id`, `counts`, `devices`, `prio` |
//! | `none` | `counts`, `devices`, `prio` |
//!
//! `prio` stays at every level: it says nothing about the event beyond
//! what waking the app does, and gateways use it to schedule delivery.
//! `sender_display_name` and `room_name` are left out when the sender has
//! no display name or the room no name.

use myelin_config::PushContent;
use serde_json::{Map, Value, json};

/// The level for one pusher and one event.
pub fn effective(server: PushContent, pusher_data: &Value, encrypted: bool) -> PushContent {
    let mut level = server;
    if pusher_data.get("format").and_then(Value::as_str) == Some("event_id_only") {
        level = level.min(PushContent::EventIdOnly);
    }
    if encrypted {
        level = level.min(PushContent::EventIdOnly);
    }
    level
}

/// What the pusher knows about the event, before gating.
pub struct EventInfo<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_type: &'a str,
    pub sender: &'a str,
    pub sender_display_name: Option<&'a str>,
    pub room_name: Option<&'a str>,
    pub content: &'a Value,
    /// `Some` for member events: whether the recipient is their target.
    pub user_is_target: Option<bool>,
}

/// The device entry of one pusher: its data without the URL, and the tweaks.
pub fn device(app_id: &str, pushkey: &str, pusher_data: &Value, tweaks: &Map<String, Value>) -> Value {
    let mut data = pusher_data.as_object().cloned().unwrap_or_default();
    data.remove("url");
    json!({ "app_id": app_id, "pushkey": pushkey, "data": data, "tweaks": tweaks })
}

/// The request body for one pusher.
pub fn body(level: PushContent, event: &EventInfo<'_>, unread: u64, device: Value, high: bool) -> Value {
    let mut n = Map::new();
    if level >= PushContent::EventIdOnly {
        n.insert("event_id".to_owned(), json!(event.event_id));
        n.insert("room_id".to_owned(), json!(event.room_id));
    }
    if level >= PushContent::Metadata {
        n.insert("type".to_owned(), json!(event.event_type));
        n.insert("sender".to_owned(), json!(event.sender));
        if let Some(name) = event.sender_display_name {
            n.insert("sender_display_name".to_owned(), json!(name));
        }
        if let Some(name) = event.room_name {
            n.insert("room_name".to_owned(), json!(name));
        }
        if let Some(target) = event.user_is_target {
            n.insert("user_is_target".to_owned(), json!(target));
        }
    }
    if level >= PushContent::Full {
        n.insert("content".to_owned(), event.content.clone());
    }
    n.insert("counts".to_owned(), json!({ "unread": unread }));
    n.insert("devices".to_owned(), json!([device]));
    n.insert("prio".to_owned(), json!(if high { "high" } else { "low" }));
    json!({ "notification": n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smallest_level_wins() {
        let plain = json!({ "url": "u" });
        let id_only = json!({ "url": "u", "format": "event_id_only" });
        assert_eq!(effective(PushContent::Full, &plain, false), PushContent::Full);
        assert_eq!(effective(PushContent::Full, &id_only, false), PushContent::EventIdOnly);
        assert_eq!(effective(PushContent::Metadata, &plain, true), PushContent::EventIdOnly);
        assert_eq!(effective(PushContent::None, &plain, true), PushContent::None);
        assert_eq!(effective(PushContent::None, &id_only, false), PushContent::None);
    }
}
