//! The EDUs of an inbound `/send` transaction: typing notices and read
//! receipts of the origin's own users, in rooms where the federation API
//! knows them joined, go on the bus as local ones do (`edu.typing`,
//! `edu.receipt`) for the sync API and the pusher; to-device messages from
//! the origin's users to ours go to the client API, which knows our
//! devices (`federationapi.todevice`). Anything else is dropped: EDUs have
//! no per-item result to report.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#edus>

use myelin_clientapi::api::{
    RECEIPT_TOPIC, REMOTE_TO_DEVICE_TOPIC, ReceiptUpdate, TYPING_TOPIC, ToDeviceMessage, TypingUpdate,
};
use myelin_types::ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, ServerName};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{FederationState, server_allowed};
use crate::storage::sender as store;

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
