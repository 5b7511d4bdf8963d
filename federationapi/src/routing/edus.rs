//! The EDUs of an inbound `/send` transaction: typing notices and read
//! receipts of the origin's own users, in rooms where the federation API
//! knows them joined, go on the bus as local ones do (`edu.typing`,
//! `edu.receipt`) for the sync API and the pusher; to-device messages from
//! the origin's users to ours go to the client API, which knows our
//! devices (`federationapi.todevice`). Device list and cross-signing key
//! updates of the origin's users who are in a room here go on
//! `clientapi.keychange` as a change of the user's keys, so that local
//! users sharing a room see them in `device_lists.changed` (nothing of
//! theirs is cached here: `/keys/query` asks their server each time); the
//! origin's users' presence goes on `edu.presence` for the sync API.
//! Anything else is dropped: EDUs have no per-item result to report.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#edus>

use std::collections::BTreeMap;

use myelin_clientapi::api::{
    KEY_CHANGE_TOPIC, KeyChange, PRESENCE_TOPIC, PresenceUpdate, RECEIPT_TOPIC, REMOTE_TO_DEVICE_TOPIC, ReceiptUpdate,
    TYPING_TOPIC, ToDeviceMessage, TypingUpdate,
};
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, ServerName};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{FederationState, server_allowed};
use crate::storage::{device_lists, sender as store};

/// How long a remote "typing" lasts without a renewal (the EDU carries no
/// timeout of its own).
const REMOTE_TYPING_MS: u64 = 30_000;

#[derive(Deserialize)]
struct Typing {
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    typing: bool,
}

#[derive(Deserialize)]
struct DirectToDevice {
    sender: OwnedUserId,
    #[serde(rename = "type")]
    event_type: String,
    message_id: String,
    messages: Map<String, Value>,
}

#[derive(Deserialize)]
struct Receipt {
    event_ids: Vec<OwnedEventId>,
    #[serde(default)]
    data: ReceiptData,
}

/// `m.device_list_update` and `m.signing_key_update`: only whose keys
/// changed matters here.
#[derive(Deserialize)]
struct KeysUpdate {
    user_id: OwnedUserId,
}

#[derive(Deserialize)]
struct PresenceEdu {
    push: Vec<PresenceEntry>,
}

#[derive(Deserialize)]
struct PresenceEntry {
    user_id: OwnedUserId,
    presence: String,
    status_msg: Option<String>,
    #[serde(default)]
    last_active_ago: u64,
}

#[derive(Deserialize, Default)]
struct ReceiptData {
    ts: Option<u64>,
    thread_id: Option<String>,
}

pub(super) async fn process_edus(state: &FederationState, origin: &ServerName, edus: Vec<Value>) {
    for edu in edus {
        let content = edu.get("content").cloned().unwrap_or(Value::Null);
        match edu.get("edu_type").and_then(Value::as_str) {
            Some("m.typing") => match serde_json::from_value::<Typing>(content) {
                Ok(typing) => typing_notice(state, origin, typing).await,
                Err(error) => tracing::debug!(%origin, %error, "dropping a malformed typing EDU"),
            },
            Some("m.direct_to_device") => match serde_json::from_value::<DirectToDevice>(content) {
                Ok(messages) => to_device(state, origin, messages).await,
                Err(error) => tracing::debug!(%origin, %error, "dropping a malformed to-device EDU"),
            },
            Some("m.receipt") => match content {
                Value::Object(rooms) => receipts(state, origin, rooms).await,
                _ => tracing::debug!(%origin, "dropping a malformed receipt EDU"),
            },
            Some(kind @ ("m.device_list_update" | "m.signing_key_update")) => {
                match serde_json::from_value::<KeysUpdate>(content) {
                    Ok(update) => keys_changed(state, origin, update.user_id).await,
                    Err(error) => tracing::debug!(%origin, %error, kind, "dropping a malformed key update EDU"),
                }
            }
            Some("m.presence") => match serde_json::from_value::<PresenceEdu>(content) {
                Ok(presence) => presence_pushed(state, origin, presence).await,
                Err(error) => tracing::debug!(%origin, %error, "dropping a malformed presence EDU"),
            },
            other => tracing::debug!(%origin, edu_type = ?other, "dropping an EDU of a kind not handled"),
        }
    }
}

/// Whether `origin` may speak for `user_id` in `room_id`: the user is
/// theirs and joined there, and the room's server ACL admits `origin`.
async fn speaks_for(
    state: &FederationState,
    origin: &ServerName,
    room_id: &OwnedRoomId,
    user_id: &OwnedUserId,
) -> bool {
    if user_id.server_name() != origin {
        tracing::info!(%origin, %user_id, "dropping an EDU about another server's user");
        return false;
    }
    match store::is_joined(&state.db, room_id.as_str(), user_id.as_str()).await {
        Ok(true) => {}
        Ok(false) => return false,
        Err(error) => {
            tracing::warn!(%error, "checking membership for an EDU failed");
            return false;
        }
    }
    match server_allowed(state, origin, room_id).await {
        Ok(true) => true,
        Ok(false) => {
            tracing::info!(%origin, %room_id, "dropping an EDU from a server the room's ACL denies");
            false
        }
        Err(error) => {
            tracing::warn!(error = %error.error, "checking the server ACL for an EDU failed");
            false
        }
    }
}

async fn typing_notice(state: &FederationState, origin: &ServerName, typing: Typing) {
    if !speaks_for(state, origin, &typing.room_id, &typing.user_id).await {
        return;
    }
    let now = state.clock.now_ms();
    let update = TypingUpdate {
        room_id: typing.room_id,
        user_id: typing.user_id,
        typing: typing.typing,
        expires_ms: if typing.typing { now + REMOTE_TYPING_MS } else { now },
    };
    if let Err(error) = state.bus.produce_json(TYPING_TOPIC, update.room_id.as_str(), &update).await {
        tracing::warn!(%error, "publishing a remote typing notice failed");
    }
}

/// `{room_id: {"m.read": {user_id: {event_ids, data}}}}`; other receipt
/// types are not defined over federation.
async fn receipts(state: &FederationState, origin: &ServerName, rooms: Map<String, Value>) {
    for (room_id, by_type) in rooms {
        let Ok(room_id) = OwnedRoomId::try_from(room_id) else { continue };
        let Some(Value::Object(users)) = by_type.get("m.read") else { continue };
        for (user_id, receipt) in users {
            let (Ok(user_id), Ok(receipt)) =
                (OwnedUserId::try_from(user_id.as_str()), serde_json::from_value::<Receipt>(receipt.clone()))
            else {
                continue;
            };
            let Some(event_id) = receipt.event_ids.last().cloned() else { continue };
            if !speaks_for(state, origin, &room_id, &user_id).await {
                continue;
            }
            let update = ReceiptUpdate {
                room_id: room_id.clone(),
                user_id,
                receipt_type: "m.read".to_owned(),
                event_id,
                thread_id: receipt.data.thread_id,
                ts: receipt.data.ts.unwrap_or_else(|| state.clock.now_ms()),
            };
            if let Err(error) = state.bus.produce_json(RECEIPT_TOPIC, room_id.as_str(), &update).await {
                tracing::warn!(%error, "publishing a remote receipt failed");
            }
        }
    }
}

/// `{sender, type, message_id, messages: {user_id: {device_id or "*": content}}}`,
/// for our users only, from the origin's own user.
async fn to_device(state: &FederationState, origin: &ServerName, edu: DirectToDevice) {
    if edu.sender.server_name() != origin {
        tracing::info!(%origin, sender = %edu.sender, "dropping a to-device EDU from another server's user");
        return;
    }
    for (user_id, by_device) in edu.messages {
        let Ok(user_id) = OwnedUserId::try_from(user_id.as_str()) else { continue };
        let Value::Object(by_device) = by_device else { continue };
        if user_id.server_name().as_str() != state.keys.server_name() {
            continue;
        }
        for (device_id, content) in by_device.into_iter().filter(|(_, content)| content.is_object()) {
            let message = ToDeviceMessage {
                sender: edu.sender.clone(),
                event_type: edu.event_type.clone(),
                message_id: serde_json::json!([origin.as_str(), edu.message_id, user_id, device_id]).to_string(),
                user_id: user_id.clone(),
                device_id,
                content,
            };
            if let Err(error) = state.bus.produce_json(REMOTE_TO_DEVICE_TOPIC, user_id.as_str(), &message).await {
                tracing::warn!(%error, "publishing a remote to-device message failed");
            }
        }
    }
}

/// Whether `origin` may speak for `user_id` and the user is in a room here
/// (no local user can share a room with anyone else).
async fn known_user_of(state: &FederationState, origin: &ServerName, user_id: &OwnedUserId) -> bool {
    if user_id.server_name() != origin {
        tracing::info!(%origin, %user_id, "dropping an EDU about another server's user");
        return false;
    }
    match device_lists::in_any_room(&state.db, user_id.as_str()).await {
        Ok(known) => known,
        Err(error) => {
            tracing::warn!(%error, "checking memberships for an EDU failed");
            false
        }
    }
}

/// The user's devices or cross-signing keys changed: a change of their
/// keys as a whole (no device counts to keep for another server's device).
async fn keys_changed(state: &FederationState, origin: &ServerName, user_id: OwnedUserId) {
    if !known_user_of(state, origin, &user_id).await {
        return;
    }
    let change = KeyChange {
        user_id,
        device_id: String::new(),
        one_time_key_counts: BTreeMap::new(),
        unused_fallback_key_types: Vec::new(),
        device_keys_changed: true,
    };
    if let Err(error) = state.bus.produce_json(KEY_CHANGE_TOPIC, change.user_id.as_str(), &change).await {
        tracing::warn!(%error, "publishing a remote device list change failed");
    }
}

/// `{push: [{user_id, presence, status_msg, last_active_ago, currently_active}]}`.
async fn presence_pushed(state: &FederationState, origin: &ServerName, edu: PresenceEdu) {
    const STATES: [&str; 3] = ["online", "unavailable", "offline"];
    for entry in edu.push {
        if !STATES.contains(&entry.presence.as_str()) || !known_user_of(state, origin, &entry.user_id).await {
            continue;
        }
        let update = PresenceUpdate {
            last_active_ts: state.clock.now_ms().saturating_sub(entry.last_active_ago),
            user_id: entry.user_id,
            presence: entry.presence,
            status_msg: entry.status_msg,
        };
        if let Err(error) = state.bus.produce_json(PRESENCE_TOPIC, update.user_id.as_str(), &update).await {
            tracing::warn!(%error, "publishing a remote presence failed");
        }
    }
}
