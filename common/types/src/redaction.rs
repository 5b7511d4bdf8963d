//! Who may redact what, and what a redacted event keeps.
//!
//! The authorization rules accept any redaction from room version 3 on; who
//! may actually redact what is decided where redactions are made and applied
//! (the room server refuses a local user's redaction of another's event
//! without the power; the sync API applies a redaction only when allowed).
//! A redaction is allowed when its sender sent the event, or has the power
//! to redact other users' events (the room's `redact` level, or a v12
//! creator's unlimited power).
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#redactions>

use ruma::canonical_json::{RedactedBecause, redact};
use ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource};
use ruma::room_version_rules::RoomVersionRules;
use ruma::{CanonicalJsonObject, OwnedUserId, RoomVersionId, UserId};
use serde_json::Value;

/// The room facts a redaction's authorization reads, from current state:
/// the create and power levels events (at least `sender` and `content`).
pub struct RoomAuth<'a> {
    pub rules: &'a RoomVersionRules,
    pub create: Option<&'a Value>,
    pub power_levels: Option<&'a Value>,
}

/// The rules of a room version, `None` for one this server does not know.
pub fn rules_of(room_version: &str) -> Option<RoomVersionRules> {
    RoomVersionId::try_from(room_version).ok()?.rules()
}

/// The id of the event a redaction PDU redacts: in `content` from room
/// version 11 on, at the top level before (both are read, as either may be
/// present in a v11 redaction).
pub fn target_of(redaction: &Value) -> Option<&str> {
    redaction["content"]["redacts"].as_str().or_else(|| redaction["redacts"].as_str())
}

/// Whether `redactor` may redact an event `author` sent.
pub fn may_redact(room: &RoomAuth<'_>, redactor: &UserId, author: &UserId) -> bool {
    if redactor == author {
        return true;
    }
    power_levels(room).user_can_redact_event_of_other(redactor)
}

/// The room's power levels as the auth rules read them, creators included
/// (the room server also asks who may invite, for restricted joins).
pub fn power_levels(room: &RoomAuth<'_>) -> RoomPowerLevels {
    let source = room
        .power_levels
        .and_then(|pdu| serde_json::from_value::<RoomPowerLevelsEventContent>(pdu["content"].clone()).ok())
        .map_or(RoomPowerLevelsSource::None, RoomPowerLevelsSource::Original);
    RoomPowerLevels::new(source, &room.rules.authorization, creators(room))
}

/// The room's creators: the create event's `creator` before room version
/// 11, its sender from 11 on, and `additional_creators` from 12 on.
fn creators(room: &RoomAuth<'_>) -> Vec<OwnedUserId> {
    let Some(create) = room.create else { return Vec::new() };
    let authorization = &room.rules.authorization;
    let creator = if authorization.use_room_create_sender { &create["sender"] } else { &create["content"]["creator"] };
    let mut creators: Vec<OwnedUserId> = creator.as_str().and_then(|id| id.try_into().ok()).into_iter().collect();
    if authorization.additional_room_creators
        && let Some(more) = create["content"]["additional_creators"].as_array()
    {
        creators.extend(more.iter().filter_map(|id| id.as_str()?.try_into().ok()));
    }
    creators
}

/// `target` with the keys redaction strips removed and the redaction (in
/// client format) as `unsigned.redacted_because`; `None` if `target` is not
/// an object.
pub fn redacted(target: &Value, rules: &RoomVersionRules, because: Value) -> Option<Value> {
    let object: CanonicalJsonObject = serde_json::from_value(target.clone()).ok()?;
    let because: CanonicalJsonObject = serde_json::from_value(because).ok()?;
    let stripped = redact(object, &rules.redaction, Some(RedactedBecause::from_json(because))).ok()?;
    serde_json::to_value(stripped).ok()
}

/// `target` with the keys redaction strips removed, without a redaction
/// event behind it (an erased account's event, as served to those who may
/// see only its redacted form); `None` if `target` is not an object.
pub fn stripped(target: &Value, rules: &RoomVersionRules) -> Option<Value> {
    let object: CanonicalJsonObject = serde_json::from_value(target.clone()).ok()?;
    serde_json::to_value(redact(object, &rules.redaction, None).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user(id: &str) -> &UserId {
        <&UserId>::try_from(id).unwrap()
    }

    #[test]
    fn authors_and_moderators_may_redact_others_may_not() {
        let rules = rules_of("11").unwrap();
        let create = json!({"type": "m.room.create", "sender": "@c:x", "content": {}});
        let levels = json!({"content": {"users": {"@c:x": 100, "@m:x": 50}, "redact": 50}});
        let room = RoomAuth { rules: &rules, create: Some(&create), power_levels: Some(&levels) };
        assert!(may_redact(&room, user("@a:x"), user("@a:x")));
        assert!(may_redact(&room, user("@m:x"), user("@a:x")));
        assert!(!may_redact(&room, user("@a:x"), user("@m:x")));
        assert!(!may_redact(&room, user("@b:y"), user("@a:x")));
    }

    #[test]
    fn without_power_levels_only_the_creator_may_redact_others() {
        for (version, create) in [
            ("10", json!({"sender": "@c:x", "content": {"creator": "@c:x"}})),
            ("11", json!({"sender": "@c:x", "content": {}})),
            ("12", json!({"sender": "@o:x", "content": {"additional_creators": ["@c:x"]}})),
        ] {
            let rules = rules_of(version).unwrap();
            let room = RoomAuth { rules: &rules, create: Some(&create), power_levels: None };
            assert!(may_redact(&room, user("@c:x"), user("@a:x")), "v{version}");
            assert!(!may_redact(&room, user("@a:x"), user("@c:x")), "v{version}");
        }
    }

    #[test]
    fn v12_creators_outrank_power_levels() {
        let rules = rules_of("12").unwrap();
        let create = json!({"sender": "@c:x", "content": {}});
        let levels = json!({"content": {"users": {"@m:x": 100}, "redact": 50}});
        let room = RoomAuth { rules: &rules, create: Some(&create), power_levels: Some(&levels) };
        assert!(may_redact(&room, user("@c:x"), user("@m:x")));
    }

    #[test]
    fn redaction_keeps_only_what_the_version_keeps() {
        let rules = rules_of("11").unwrap();
        let event = json!({"type": "m.room.message", "sender": "@a:x", "content": {"body": "secret"},
                           "origin_server_ts": 1, "room_id": "!r:x", "unsigned": {"age": 3}});
        let stripped = redacted(&event, &rules, json!({"event_id": "$r", "type": "m.room.redaction"})).unwrap();
        assert_eq!(stripped["content"], json!({}));
        assert_eq!(stripped["sender"], "@a:x");
        assert_eq!(stripped["unsigned"]["redacted_because"]["event_id"], "$r");
        assert!(stripped["unsigned"].get("age").is_none());
    }

    #[test]
    fn target_is_read_from_content_or_top_level() {
        assert_eq!(target_of(&json!({"content": {"redacts": "$a"}})), Some("$a"));
        assert_eq!(target_of(&json!({"redacts": "$b", "content": {}})), Some("$b"));
        assert_eq!(target_of(&json!({"content": {}})), None);
    }
}
