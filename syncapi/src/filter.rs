//! Filters as the spec defines them ([Filtering]) and how they match events.
//! Only the parts that change what `/sync` and `/messages` return are
//! interpreted; unknown keys are kept (the stored filter is the client's JSON).
//!
//! [Filtering]: https://spec.matrix.org/v1.16/client-server-api/#filtering

use serde::Deserialize;
use serde_json::Value;

/// Timeline events per room when the filter does not say.
pub const DEFAULT_TIMELINE_LIMIT: usize = 10;
/// The most timeline events one room gets in one response.
pub const MAX_TIMELINE_LIMIT: usize = 1000;

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Filter {
    #[serde(default)]
    pub event_fields: Option<Vec<String>>,
    #[serde(default)]
    pub event_format: Option<EventFormat>,
    #[serde(default)]
    pub presence: Option<EventFilter>,
    #[serde(default)]
    pub account_data: Option<EventFilter>,
    #[serde(default)]
    pub room: Option<RoomFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFormat {
    Client,
    Federation,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EventFilter {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub not_types: Option<Vec<String>>,
    #[serde(default)]
    pub senders: Option<Vec<String>>,
    #[serde(default)]
    pub not_senders: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomFilter {
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    #[serde(default)]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default)]
    pub include_leave: Option<bool>,
    #[serde(default)]
    pub timeline: Option<RoomEventFilter>,
    #[serde(default)]
    pub state: Option<RoomEventFilter>,
    #[serde(default)]
    pub ephemeral: Option<RoomEventFilter>,
    #[serde(default)]
    pub account_data: Option<RoomEventFilter>,
}

/// `RoomEventFilter` and `StateFilter` (the same fields).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RoomEventFilter {
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub types: Option<Vec<String>>,
    #[serde(default)]
    pub not_types: Option<Vec<String>>,
    #[serde(default)]
    pub senders: Option<Vec<String>>,
    #[serde(default)]
    pub not_senders: Option<Vec<String>>,
    #[serde(default)]
    pub rooms: Option<Vec<String>>,
    #[serde(default)]
    pub not_rooms: Option<Vec<String>>,
    #[serde(default)]
    pub contains_url: Option<bool>,
    #[serde(default)]
    pub lazy_load_members: Option<bool>,
    #[serde(default)]
    pub include_redundant_members: Option<bool>,
    #[serde(default)]
    pub unread_thread_notifications: Option<bool>,
}

impl Filter {
    /// Parse a filter definition; `Err` explains which part has the wrong shape.
    pub fn from_value(value: &Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err("a filter must be a JSON object".to_owned());
        }
        serde_json::from_value(value.clone()).map_err(|e| e.to_string())
    }

    pub fn timeline_limit(&self) -> usize {
        self.room
            .as_ref()
            .and_then(|r| r.timeline.as_ref())
            .and_then(|t| t.limit)
            .map(|l| (l as usize).clamp(1, MAX_TIMELINE_LIMIT))
            .unwrap_or(DEFAULT_TIMELINE_LIMIT)
    }

    pub fn include_leave(&self) -> bool {
        self.room.as_ref().and_then(|r| r.include_leave).unwrap_or(false)
    }

    /// Whether rooms of this id appear at all.
    pub fn room_allowed(&self, room_id: &str) -> bool {
        let Some(room) = &self.room else { return true };
        allowed(room_id, room.rooms.as_deref(), room.not_rooms.as_deref(), str::eq)
    }

    pub fn timeline(&self) -> Option<&RoomEventFilter> {
        self.room.as_ref().and_then(|r| r.timeline.as_ref())
    }

    pub fn state(&self) -> Option<&RoomEventFilter> {
        self.room.as_ref().and_then(|r| r.state.as_ref())
    }

    pub fn ephemeral(&self) -> Option<&RoomEventFilter> {
        self.room.as_ref().and_then(|r| r.ephemeral.as_ref())
    }

    pub fn room_account_data(&self) -> Option<&RoomEventFilter> {
        self.room.as_ref().and_then(|r| r.account_data.as_ref())
    }

    /// Whether a presence event (type `m.presence`, its user as `sender`) appears.
    pub fn presence_allowed(&self, event: &Value) -> bool {
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default();
        let sender = event.get("sender").and_then(Value::as_str).unwrap_or_default();
        self.presence.as_ref().is_none_or(|f| {
            allowed(event_type, f.types.as_deref(), f.not_types.as_deref(), type_matches)
                && allowed(sender, f.senders.as_deref(), f.not_senders.as_deref(), |a, b| a == b)
        })
    }

    /// Whether global account data of this type appears.
    pub fn account_data_allowed(&self, data_type: &str) -> bool {
        self.account_data
            .as_ref()
            .is_none_or(|f| allowed(data_type, f.types.as_deref(), f.not_types.as_deref(), type_matches))
    }
}

impl RoomEventFilter {
    /// Whether `event` (PDU or client format) in `room_id` passes this filter.
    pub fn matches(&self, room_id: &str, event: &Value) -> bool {
        let event_type = event.get("type").and_then(Value::as_str).unwrap_or_default();
        let sender = event.get("sender").and_then(Value::as_str).unwrap_or_default();
        if !allowed(event_type, self.types.as_deref(), self.not_types.as_deref(), type_matches) {
            return false;
        }
        if !allowed(sender, self.senders.as_deref(), self.not_senders.as_deref(), str::eq) {
            return false;
        }
        if !allowed(room_id, self.rooms.as_deref(), self.not_rooms.as_deref(), str::eq) {
            return false;
        }
        if let Some(want_url) = self.contains_url {
            let has_url = event.get("content").and_then(|c| c.get("url")).is_some_and(Value::is_string);
            if has_url != want_url {
                return false;
            }
        }
        true
    }
}

/// Optional filter helper: `None` passes everything.
pub fn passes(filter: Option<&RoomEventFilter>, room_id: &str, event: &Value) -> bool {
    filter.is_none_or(|f| f.matches(room_id, event))
}

fn allowed(value: &str, include: Option<&[String]>, exclude: Option<&[String]>, eq: fn(&str, &str) -> bool) -> bool {
    if exclude.is_some_and(|ex| ex.iter().any(|p| eq(p, value))) {
        return false;
    }
    include.is_none_or(|inc| inc.iter().any(|p| eq(p, value)))
}

/// Event type patterns may use `*` for any run of characters.
fn type_matches(pattern: &str, value: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == value;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last) {
        return false;
    }
    let mut rest = &value[first.len()..value.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wildcards() {
        assert!(type_matches("m.*", "m.room.message"));
        assert!(type_matches("*", "x"));
        assert!(type_matches("m.room.*e", "m.room.message"));
        assert!(!type_matches("m.room.*e", "m.room.name2"));
        assert!(!type_matches("m.room.name", "m.room.names"));
        assert!(type_matches("a*b*c", "aXbYc"));
        assert!(!type_matches("ab*ba", "aba"));
    }

    #[test]
    fn shape_errors_are_reported() {
        assert!(Filter::from_value(&json!([])).is_err());
        assert!(Filter::from_value(&json!({"room": {"timeline": {"limit": "x"}}})).is_err());
        assert!(Filter::from_value(&json!({"room": {"timeline": {"limit": -1}}})).is_err());
        let f =
            Filter::from_value(&json!({"room": {"timeline": {"limit": 3, "not_types": ["m.room.member"]}}, "x": 1}))
                .unwrap();
        assert_eq!(f.timeline_limit(), 3);
        let tl = f.timeline().unwrap();
        assert!(!tl.matches("!r", &json!({"type": "m.room.member", "sender": "@a:x"})));
        assert!(tl.matches("!r", &json!({"type": "m.room.message", "sender": "@a:x"})));
    }
}
