//! What a room upgrade puts into the replacement room and changes in the
//! old one, planned from the old room's current state.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#server-behaviour-19>

use ruma::room_version_rules::RoomVersionRules;
use ruma::{EventId, OwnedUserId, RoomAliasId, RoomId, RoomVersionId, ServerName, UserId};
use serde_json::{Map, Value, json};

use super::create_room::PlannedEvent;
use crate::error::RequestError;

/// The state the spec recommends carrying over, besides the power levels
/// (which go first), in the spec's order.
pub const TRANSFERABLE: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

/// The `body` of the tombstone.
pub const TOMBSTONE_BODY: &str = "This room has been replaced";

/// What the plan reads of the old room.
pub struct OldRoom<'a> {
    pub room_id: &'a RoomId,
    pub rules: &'a RoomVersionRules,
    pub create_sender: &'a UserId,
    pub create_content: &'a Value,
    /// Cited as the predecessor before room version 12.
    pub latest_event: Option<&'a EventId>,
    pub power_levels: Option<&'a Value>,
    /// The content of each [`TRANSFERABLE`] event the room has.
    pub transferable: Vec<(&'static str, Value)>,
    pub canonical_alias: Option<&'a Value>,
    /// Each banned user and the content of their ban.
    pub bans: Vec<(String, Value)>,
}

/// Who upgrades, to what.
pub struct Upgrade<'a> {
    pub requester: &'a UserId,
    /// The requester's join content (membership and profile).
    pub requester_join: Value,
    pub version: RoomVersionId,
    pub additional_creators: &'a [OwnedUserId],
    /// Aliases of this server move to the new room; others stay.
    pub server_name: &'a ServerName,
}

pub struct UpgradePlan {
    pub version: RoomVersionId,
    pub create_content: Value,
    /// The new room's events after its create event, all by the requester, in order.
    pub events: Vec<PlannedEvent>,
    /// The old room's bans, copied after `events`. Each is left out if the
    /// auth rules refuse it (a banned user who is now a creator, or who
    /// outranks the requester).
    pub bans: Vec<PlannedEvent>,
    /// The power levels the new room ends with, when the requester was
    /// given more power for the copy than they had in the old room.
    pub final_power_levels: Option<Value>,
    /// The old room's canonical alias once the aliases moved, if it changes.
    pub old_canonical_alias: Option<Value>,
    /// The old room's power levels restricted, if they change.
    pub old_power_levels: Option<Value>,
}

/// A power level as stored: an integer, or a string of one before room version 10.
fn level(value: Option<&Value>) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The creators of a room with these rules and create event: its sender
/// and `additional_creators`. Empty for versions where creators have no
/// power beyond the power levels.
fn creators_of(rules: &RoomVersionRules, sender: &UserId, content: &Value) -> Vec<String> {
    if !rules.authorization.explicitly_privilege_room_creators {
        return Vec::new();
    }
    let additional = content.get("additional_creators").and_then(Value::as_array).into_iter().flatten();
    std::iter::once(sender.to_string()).chain(additional.filter_map(Value::as_str).map(str::to_owned)).collect()
}

/// Power levels as integers, which room version 10 on requires: strings of
/// integers, accepted before, are converted.
fn integer_levels(levels: &mut Map<String, Value>) {
    let convert = |value: &mut Value| {
        if value.is_string()
            && let Some(n) = level(Some(&*value))
        {
            *value = json!(n);
        }
    };
    for (key, value) in levels.iter_mut() {
        match key.as_str() {
            "users" | "events" | "notifications" => {
                value.as_object_mut().into_iter().flatten().for_each(|(_, v)| convert(v))
            }
            _ => convert(value),
        }
    }
}

/// The level that sending every copied event needs: Synapse's measure, the
/// highest of `state_default`, `ban` and any event's level.
fn level_to_copy(levels: &Map<String, Value>) -> i64 {
    let events =
        levels.get("events").and_then(Value::as_object).into_iter().flatten().filter_map(|(_, v)| level(Some(v)));
    let state_default = level(levels.get("state_default")).unwrap_or(50);
    let ban = level(levels.get("ban")).unwrap_or(50);
    events.chain([state_default, ban]).max().unwrap_or(50)
}

/// The old room's power levels restricted so that ordinary members can no
/// longer talk or invite: `events_default` and `invite` at least
/// max(50, `users_default` + 1). `None` when they are already.
fn restricted(levels: &Value) -> Option<Value> {
    let users_default = level(levels.get("users_default")).unwrap_or(0);
    let restricted = users_default.saturating_add(1).max(50);
    let mut out = levels.clone();
    let mut changed = false;
    for key in ["events_default", "invite"] {
        if level(levels.get(key)).unwrap_or(0) < restricted {
            out[key] = json!(restricted);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// The canonical alias split between the rooms: this server's aliases
/// (`alias` and `alt_aliases`) go to the new room, the others stay.
/// `None` when no alias moves.
fn split_aliases(content: &Value, server_name: &ServerName) -> Option<(Value, Value)> {
    let local = |alias: &Value| {
        alias.as_str().and_then(|a| <&RoomAliasId>::try_from(a).ok()).is_some_and(|a| a.server_name() == server_name)
    };
    let mut moved = Map::new();
    let mut kept = content.as_object().cloned().unwrap_or_default();
    if let Some(alias) = content.get("alias").filter(|alias| local(alias)) {
        moved.insert("alias".into(), alias.clone());
        kept.remove("alias");
    }
    if let Some(alt) = content.get("alt_aliases").and_then(Value::as_array) {
        let (ours, theirs): (Vec<Value>, Vec<Value>) = alt.iter().cloned().partition(local);
        if !ours.is_empty() {
            moved.insert("alt_aliases".into(), Value::Array(ours));
            kept.insert("alt_aliases".into(), Value::Array(theirs));
        }
    }
    if moved.is_empty() { None } else { Some((Value::Object(moved), Value::Object(kept))) }
}

/// The replacement room and the changes to the old one.
pub fn plan(old: &OldRoom<'_>, upgrade: Upgrade<'_>) -> Result<UpgradePlan, RequestError> {
    let version = upgrade.version;
    let rules = version.rules().ok_or_else(|| RequestError::UnsupportedRoomVersion(version.to_string()))?;
    let auth = &rules.authorization;
    let requester = upgrade.requester;

    let mut create = Map::new();
    create.insert("room_version".into(), json!(version));
    if !auth.use_room_create_sender {
        create.insert("creator".into(), json!(requester));
    }
    let mut predecessor = json!({ "room_id": old.room_id });
    // From v12 the room id alone: the new room's id is its create event's
    // hash, so no event of the old room can point to it first.
    if !auth.room_create_event_id_as_room_id
        && let Some(latest) = old.latest_event
    {
        predecessor["event_id"] = json!(latest);
    }
    create.insert("predecessor".into(), predecessor);
    if let Some(room_type) = old.create_content.get("type") {
        create.insert("type".into(), room_type.clone());
    }
    // Beyond the spec, as Synapse does: a room closed to other servers stays closed.
    if old.create_content.get("m.federate") == Some(&json!(false)) {
        create.insert("m.federate".into(), json!(false));
    }
    let mut creators = vec![requester.to_string()];
    if auth.additional_room_creators {
        let mut additional: Vec<String> = Vec::new();
        for user in upgrade.additional_creators.iter().map(ToString::to_string) {
            if user != requester.as_str() && !additional.contains(&user) {
                additional.push(user);
            }
        }
        if !additional.is_empty() {
            create.insert("additional_creators".into(), json!(additional));
        }
        creators.extend(additional);
    }

    let mut events = vec![PlannedEvent::new("m.room.member", requester.as_str(), upgrade.requester_join)];
    let mut final_power_levels = None;
    if let Some(old_levels) = old.power_levels {
        let mut levels = old_levels.as_object().cloned().unwrap_or_default();
        if auth.integer_power_levels {
            integer_levels(&mut levels);
        }
        // The auth rules accept no other `users` than an object.
        let users = levels.entry("users").or_insert_with(|| json!({}));
        if !users.is_object() {
            *users = json!({});
        }
        if let Some(users) = users.as_object_mut() {
            if auth.explicitly_privilege_room_creators {
                // Creators have unlimited power and may not be listed.
                users.retain(|user, _| !creators.contains(user));
            } else {
                // Creators of the old room keep an admin's power where creators have none of their own.
                for creator in creators_of(old.rules, old.create_sender, old.create_content) {
                    users.entry(creator).or_insert(json!(100));
                }
            }
        }
        if !auth.explicitly_privilege_room_creators {
            // The requester may need more power to copy the state than the
            // old room gave them: given it first, taken back at the end.
            let needed = level_to_copy(&levels);
            let own =
                level(levels["users"].get(requester.as_str())).or(level(levels.get("users_default"))).unwrap_or(0);
            if own < needed {
                final_power_levels = Some(Value::Object(levels.clone()));
                levels["users"][requester.as_str()] = json!(needed);
            }
        }
        events.push(PlannedEvent::new("m.room.power_levels", "", Value::Object(levels)));
    }
    for (event_type, content) in &old.transferable {
        events.push(PlannedEvent::new(event_type, "", content.clone()));
    }
    let mut old_canonical_alias = None;
    if let Some((moved, kept)) = old.canonical_alias.and_then(|content| split_aliases(content, upgrade.server_name)) {
        events.push(PlannedEvent::new("m.room.canonical_alias", "", moved));
        old_canonical_alias = Some(kept);
    }
    // Beyond the spec, as Synapse does: whoever was banned stays banned.
    let bans =
        old.bans.iter().map(|(user, content)| PlannedEvent::new("m.room.member", user, content.clone())).collect();

    Ok(UpgradePlan {
        version,
        create_content: Value::Object(create),
        events,
        bans,
        final_power_levels,
        old_canonical_alias,
        old_power_levels: old.power_levels.and_then(restricted),
    })
}

#[cfg(test)]
mod tests {
    use ruma::{owned_user_id, server_name};

    use super::*;

    fn old_room<'a>(
        rules: &'a RoomVersionRules,
        creator: &'a UserId,
        create: &'a Value,
        levels: &'a Value,
    ) -> OldRoom<'a> {
        OldRoom {
            room_id: <&RoomId>::try_from("!old:here").unwrap(),
            rules,
            create_sender: creator,
            create_content: create,
            latest_event: Some(<&EventId>::try_from("$latest").unwrap()),
            power_levels: Some(levels),
            transferable: vec![("m.room.name", json!({"name": "Tea"}))],
            canonical_alias: None,
            bans: vec![("@troll:there".into(), json!({"membership": "ban", "reason": "spam"}))],
        }
    }

    fn upgrade<'a>(requester: &'a UserId, version: RoomVersionId, additional: &'a [OwnedUserId]) -> Upgrade<'a> {
        Upgrade {
            requester,
            requester_join: json!({"membership": "join"}),
            version,
            additional_creators: additional,
            server_name: server_name!("here"),
        }
    }

    fn content<'a>(plan: &'a UpgradePlan, event_type: &str) -> &'a Value {
        &plan.events.iter().find(|e| e.event_type == event_type).unwrap().content
    }

    #[test]
    fn v11_to_v12_cites_only_the_room_and_drops_creators_from_users() {
        let rules = RoomVersionId::V11.rules().unwrap();
        let alice = owned_user_id!("@alice:here");
        let levels = json!({"users": {"@alice:here": 100, "@bob:here": 100, "@carol:here": 50}, "users_default": 0});
        let create = json!({"room_version": "11", "type": "m.space"});
        let old = old_room(&rules, &alice, &create, &levels);
        let additional = [owned_user_id!("@bob:here"), owned_user_id!("@alice:here")];
        let plan = plan(&old, upgrade(&alice, RoomVersionId::V12, &additional)).unwrap();

        assert_eq!(
            plan.create_content,
            json!({"room_version": "12", "predecessor": {"room_id": "!old:here"}, "type": "m.space",
                   "additional_creators": ["@bob:here"]})
        );
        assert_eq!(content(&plan, "m.room.power_levels")["users"], json!({"@carol:here": 50}));
        assert_eq!(content(&plan, "m.room.name"), &json!({"name": "Tea"}));
        assert!(plan.final_power_levels.is_none(), "creators need no temporary power");
        assert_eq!(plan.bans[0].state_key, "@troll:there");
        let restricted = plan.old_power_levels.unwrap();
        assert_eq!((restricted["events_default"].clone(), restricted["invite"].clone()), (json!(50), json!(50)));
    }

    #[test]
    fn v10_to_v11_cites_the_latest_event_and_lends_power_for_the_copy() {
        let rules = RoomVersionId::V10.rules().unwrap();
        let alice = owned_user_id!("@alice:here");
        // Alice may tombstone (50) but not set power levels (100) or ban (60).
        let levels = json!({"users": {"@alice:here": "50"}, "users_default": 50, "ban": 60,
                            "events": {"m.room.tombstone": 50, "m.room.power_levels": 100}});
        let create = json!({"room_version": "10", "creator": "@alice:here", "m.federate": false});
        let old = old_room(&rules, &alice, &create, &levels);
        let plan = plan(&old, upgrade(&alice, RoomVersionId::V11, &[owned_user_id!("@bob:here")])).unwrap();

        assert_eq!(
            plan.create_content,
            json!({"room_version": "11", "predecessor": {"room_id": "!old:here", "event_id": "$latest"},
                   "m.federate": false})
        );
        assert_eq!(content(&plan, "m.room.power_levels")["users"], json!({"@alice:here": 100}));
        assert_eq!(plan.final_power_levels.unwrap()["users"], json!({"@alice:here": 50}));
        let restricted = plan.old_power_levels.unwrap();
        assert_eq!((restricted["events_default"].clone(), restricted["invite"].clone()), (json!(51), json!(51)));
    }

    #[test]
    fn v12_to_v11_keeps_the_old_creators_as_admins() {
        let rules = RoomVersionId::V12.rules().unwrap();
        let alice = owned_user_id!("@alice:here");
        let levels = json!({"users": {"@carol:here": 50}, "events_default": 75, "invite": 60});
        let create = json!({"room_version": "12", "additional_creators": ["@bob:here"]});
        let old = old_room(&rules, &alice, &create, &levels);
        let plan = plan(&old, upgrade(&alice, RoomVersionId::V11, &[])).unwrap();

        assert_eq!(
            content(&plan, "m.room.power_levels")["users"],
            json!({"@alice:here": 100, "@bob:here": 100, "@carol:here": 50})
        );
        assert_eq!(plan.create_content["creator"], json!(null), "v11 names its creator by the sender");
        assert!(plan.old_power_levels.is_none(), "already restricted");
    }

    #[test]
    fn local_aliases_move_and_others_stay() {
        let content = json!({"alias": "#tea:here", "alt_aliases": ["#chai:here", "#tea:there"]});
        let (moved, kept) = split_aliases(&content, server_name!("here")).unwrap();
        assert_eq!(moved, json!({"alias": "#tea:here", "alt_aliases": ["#chai:here"]}));
        assert_eq!(kept, json!({"alt_aliases": ["#tea:there"]}));
        assert!(split_aliases(&json!({"alias": "#tea:there"}), server_name!("here")).is_none());
    }
}
