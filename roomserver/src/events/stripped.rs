//! Stripped state: the few state events that let a user outside a room
//! recognise it, shown with invites and knocks.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#stripped-state>

use serde_json::{Value, json};

use crate::error::RequestError;
use crate::storage::Tx;

/// The state types shown (with an empty state key), as the spec recommends.
const STRIPPED_STATE_TYPES: &[&str] = &[
    "m.room.create",
    "m.room.join_rules",
    "m.room.name",
    "m.room.avatar",
    "m.room.canonical_alias",
    "m.room.encryption",
    "m.room.topic",
];

/// The room's current stripped state, and the member event of `member`
/// when given (the inviter's, for an invite).
pub async fn stripped_state(tx: &mut Tx, room_id: &str, member: Option<&str>) -> Result<Vec<Value>, RequestError> {
    let shown = STRIPPED_STATE_TYPES.iter().map(|kind| (*kind, "")).chain(member.map(|user| ("m.room.member", user)));
    let mut events = Vec::new();
    for (kind, key) in shown {
        if let Some((_, json)) = tx.current_state_event(room_id, kind, key).await? {
            let pdu: Value = serde_json::from_str(&json)?;
            events.push(json!({
                "type": pdu["type"], "state_key": pdu["state_key"], "sender": pdu["sender"], "content": pdu["content"],
            }));
        }
    }
    Ok(events)
}
