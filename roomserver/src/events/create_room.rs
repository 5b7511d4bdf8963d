//! What `POST /createRoom` puts into a new room, in the spec's order.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom>

use ruma::{OwnedUserId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};

use crate::api::CreateRoom;
use crate::error::RequestError;

/// Room versions this server creates rooms in: every stable one.
pub const NEW_ROOM_VERSIONS: &[RoomVersionId] = &[
    RoomVersionId::V1,
    RoomVersionId::V2,
    RoomVersionId::V3,
    RoomVersionId::V4,
    RoomVersionId::V5,
    RoomVersionId::V6,
    RoomVersionId::V7,
    RoomVersionId::V8,
    RoomVersionId::V9,
    RoomVersionId::V10,
    RoomVersionId::V11,
    RoomVersionId::V12,
];

/// One state event to send after the create event, always by the creator.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    pub event_type: String,
    pub state_key: String,
    pub content: Value,
}

impl PlannedEvent {
    pub(crate) fn new(event_type: &str, state_key: &str, content: Value) -> Self {
        Self { event_type: event_type.to_owned(), state_key: state_key.to_owned(), content }
    }
}

pub struct Plan {
    pub version: RoomVersionId,
    pub create_content: Value,
    /// Everything after the create event, in order.
    pub events: Vec<PlannedEvent>,
}

/// Pick the version a new room gets: the requested one or the server default,
/// and only one this server creates rooms in.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom> (`room_version`)
pub fn room_version(requested: Option<&str>, default: &str) -> Result<RoomVersionId, RequestError> {
    let wanted = requested.unwrap_or(default);
    NEW_ROOM_VERSIONS
        .iter()
        .find(|version| version.as_str() == wanted)
        .cloned()
        .ok_or_else(|| RequestError::UnsupportedRoomVersion(wanted.to_owned()))
}

/// The events of a new room after its create event: creator join, power
/// levels, preset rules, `initial_state`, name, topic, then invites.
///
/// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3createroom>
pub fn plan(request: &CreateRoom, default_version: &str) -> Result<Plan, RequestError> {
    let version = room_version(request.room_version.as_deref(), default_version)?;
    let rules = version.rules().ok_or_else(|| RequestError::UnsupportedRoomVersion(version.to_string()))?;
    let creator = &request.creator;

    let mut create_content = request.creation_content.clone().unwrap_or_default();
    create_content.insert("room_version".into(), json!(version));
    if !rules.authorization.use_room_create_sender {
        // Up to v10 the creator is named in the content.
        create_content.insert("creator".into(), json!(creator));
    }
    // v12 creators have unlimited power and must not appear in power levels.
    let creators: Vec<OwnedUserId> = if rules.authorization.explicitly_privilege_room_creators {
        let additional = match create_content.get("additional_creators") {
            None => Vec::new(),
            Some(value) => serde_json::from_value::<Vec<OwnedUserId>>(value.clone())
                .map_err(|_| RequestError::BadJson("additional_creators must be a list of user ids".into()))?,
        };
        std::iter::once(creator.clone()).chain(additional).collect()
    } else {
        Vec::new()
    };
    let is_creator = |user: &UserId| creators.iter().any(|c| c == user);

    let preset = match (request.preset.as_deref(), request.visibility.as_deref()) {
        (Some(preset), _) => preset,
        (None, Some("public")) => "public_chat",
        (None, _) => "private_chat",
    };
    let (join_rule, guest_access, invite_level) = match preset {
        "private_chat" | "trusted_private_chat" => ("invite", "can_join", 0),
        "public_chat" => ("public", "forbidden", 50),
        other => return Err(RequestError::InvalidParam(format!("unknown preset {other:?}"))),
    };

    for spec in &request.initial_state {
        if spec.event_type.is_empty() {
            return Err(RequestError::InvalidParam("initial_state event without a type".into()));
        }
        if matches!(spec.event_type.as_str(), "m.room.create" | "m.room.member") {
            return Err(RequestError::InvalidParam(format!("{} cannot be set through initial_state", spec.event_type)));
        }
        if !spec.content.is_object() {
            return Err(RequestError::BadJson("initial_state content must be an object".into()));
        }
    }

    let mut users = Map::new();
    if !is_creator(creator) {
        users.insert(creator.to_string(), json!(100));
    }
    if preset == "trusted_private_chat" {
        for invitee in request.invite.iter().filter(|user| !is_creator(user)) {
            users.insert(invitee.to_string(), json!(100));
        }
    }
    let mut power_levels = json!({
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": invite_level,
    });
    if let (Some(overrides), Value::Object(levels)) = (&request.power_level_content_override, &mut power_levels) {
        levels.extend(overrides.clone());
    }

    let mut creator_join = request.creator_profile.clone();
    creator_join.insert("membership".into(), json!("join"));
    let mut events = vec![
        PlannedEvent::new("m.room.member", creator.as_str(), Value::Object(creator_join)),
        PlannedEvent::new("m.room.power_levels", "", power_levels),
    ];
    // initial_state wins over what the preset would set.
    let preset_events = [
        PlannedEvent::new("m.room.join_rules", "", json!({"join_rule": join_rule})),
        PlannedEvent::new("m.room.history_visibility", "", json!({"history_visibility": "shared"})),
        PlannedEvent::new("m.room.guest_access", "", json!({"guest_access": guest_access})),
    ];
    for event in preset_events {
        let overridden = request
            .initial_state
            .iter()
            .any(|spec| spec.event_type == event.event_type && spec.state_key == event.state_key);
        if !overridden {
            events.push(event);
        }
    }
    events.extend(
        request
            .initial_state
            .iter()
            .map(|spec| PlannedEvent::new(&spec.event_type, &spec.state_key, spec.content.clone())),
    );
    if let Some(name) = &request.name {
        events.push(PlannedEvent::new("m.room.name", "", json!({"name": name})));
    }
    if let Some(topic) = &request.topic {
        let content = json!({"topic": topic, "m.topic": {"m.text": [{"body": topic, "mimetype": "text/plain"}]}});
        events.push(PlannedEvent::new("m.room.topic", "", content));
    }
    for invitee in &request.invite {
        let mut content = json!({"membership": "invite"});
        if request.is_direct {
            content["is_direct"] = json!(true);
        }
        events.push(PlannedEvent::new("m.room.member", invitee.as_str(), content));
    }
    Ok(Plan { version, create_content: Value::Object(create_content), events })
}
