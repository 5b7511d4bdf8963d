//! Turning chosen fields into a signed PDU, and the format and size checks
//! every PDU passes (DESIGN.md invariant 4).

use std::collections::HashMap;

use myelin_types::random::alphanumeric;
use ruma::room_version_rules::{EventsReferenceFormatVersion, RoomVersionRules};
use ruma::signatures::{JsonError, hash_and_sign_event, reference_hash};
use ruma::state_res::check_pdu_format;
use ruma::{CanonicalJsonValue, EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Map, Value, json};

use super::Signer;
use super::pdu::Pdu;
use crate::error::RequestError;

/// Largest PDU, in bytes of canonical JSON.
pub const MAX_PDU_BYTES: usize = 65_536;
/// Largest `type` and `state_key`, in bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// The fields the server chose for a new event.
pub struct Draft<'a> {
    /// `None` only for a v12 create event, whose id becomes the room id.
    pub room_id: Option<&'a RoomId>,
    pub sender: &'a UserId,
    pub event_type: &'a str,
    pub state_key: Option<&'a str>,
    pub content: &'a Value,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// Reference hashes of the cited events, for room versions 1 and 2,
    /// which cite events as `[id, {"sha256": hash}]`.
    pub reference_hashes: HashMap<OwnedEventId, String>,
    pub depth: i64,
    pub origin_server_ts: u64,
}

/// A signed PDU and its id.
pub struct Built {
    pub event_id: OwnedEventId,
    /// Canonical JSON of the full PDU.
    pub json: String,
    pub pdu: Pdu,
}

/// Build, hash and sign an event, then check it like any received PDU.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#pdus> (format and
/// size limits) and <https://spec.matrix.org/v1.16/server-server-api/#calculating-the-reference-hash-for-an-event>
/// (event ids are reference hashes from room version 3 on).
pub fn build(signer: &Signer, rules: &RoomVersionRules, draft: Draft<'_>) -> Result<Built, RequestError> {
    if draft.event_type.len() > MAX_KEY_BYTES {
        return Err(RequestError::TooLarge(format!("event type is longer than {MAX_KEY_BYTES} bytes")));
    }
    if draft.state_key.is_some_and(|key| key.len() > MAX_KEY_BYTES) {
        return Err(RequestError::TooLarge(format!("state key is longer than {MAX_KEY_BYTES} bytes")));
    }
    if !draft.content.is_object() {
        return Err(RequestError::BadJson("event content must be a JSON object".into()));
    }
    let mut fields = Map::new();
    fields.insert("type".into(), json!(draft.event_type));
    fields.insert("sender".into(), json!(draft.sender));
    let mut content = draft.content.clone();
    if draft.event_type == "m.room.redaction" {
        let redacts = content.get("redacts").and_then(Value::as_str).and_then(|id| EventId::parse(id).ok());
        let Some(redacts) = redacts else {
            return Err(RequestError::BadJson("a redaction needs the event id it redacts".into()));
        };
        // Before room version 11 the redacted event is named at the top level.
        // Spec: <https://spec.matrix.org/v1.16/rooms/v11/#moving-the-redacts-key>
        if !rules.redaction.content_field_redacts {
            content.as_object_mut().expect("checked above").remove("redacts");
            fields.insert("redacts".into(), json!(redacts));
        }
    }
    fields.insert("content".into(), content);
    fields.insert("prev_events".into(), cite(rules, &draft.prev_events, &draft.reference_hashes));
    fields.insert("auth_events".into(), cite(rules, &draft.auth_events, &draft.reference_hashes));
    // Room versions 1 and 2 carry a random id that names its server.
    // Spec: <https://spec.matrix.org/v1.16/rooms/v1/#event-ids>
    let carried_id =
        rules.event_format.require_event_id.then(|| format!("${}:{}", alphanumeric(18), signer.server_name));
    if let Some(id) = &carried_id {
        fields.insert("event_id".into(), json!(id));
    }
    fields.insert("depth".into(), json!(draft.depth));
    fields.insert("origin_server_ts".into(), json!(draft.origin_server_ts));
    if let Some(room_id) = draft.room_id {
        fields.insert("room_id".into(), json!(room_id));
    }
    if let Some(state_key) = draft.state_key {
        fields.insert("state_key".into(), json!(state_key));
    }
    // `origin` only means something where redaction keeps it (up to v10).
    if rules.redaction.keep_origin_membership_prev_state {
        fields.insert("origin".into(), json!(signer.server_name));
    }
    let mut object = match CanonicalJsonValue::try_from(Value::Object(fields)) {
        Ok(CanonicalJsonValue::Object(object)) => object,
        Ok(_) => unreachable!("an object stays an object"),
        Err(error) => return Err(RequestError::BadJson(format!("event is not canonical JSON: {error}"))),
    };
    hash_and_sign_event(signer.server_name.as_str(), &signer.key.keypair, &mut object, &rules.redaction)
        .map_err(|error| too_large_or(error, "signing"))?;
    let json = serde_json::to_string(&object)?;
    if json.len() > MAX_PDU_BYTES {
        return Err(RequestError::TooLarge(format!("event is larger than {MAX_PDU_BYTES} bytes")));
    }
    check_pdu_format(&object, &rules.event_format).map_err(RequestError::BadJson)?;
    let event_id = match carried_id {
        Some(id) => id,
        None => {
            let hash = reference_hash(&object, rules).map_err(|error| too_large_or(error, "reference hash"))?;
            format!("${hash}")
        }
    };
    let event_id = EventId::parse(event_id).map_err(|e| RequestError::Internal(e.to_string()))?;
    let pdu = Pdu::parse(event_id.clone(), &json).map_err(|e| RequestError::BadJson(e.to_string()))?;
    Ok(Built { event_id, json, pdu })
}

/// `prev_events`/`auth_events` as the room version spells them: plain ids,
/// or `[id, {"sha256": hash}]` pairs in room versions 1 and 2.
pub(super) fn cite(rules: &RoomVersionRules, ids: &[OwnedEventId], hashes: &HashMap<OwnedEventId, String>) -> Value {
    if rules.events_reference_format == EventsReferenceFormatVersion::V1 {
        let pairs =
            ids.iter().map(|id| json!([id, {"sha256": hashes.get(id).map(String::as_str).unwrap_or_default()}]));
        Value::Array(pairs.collect())
    } else {
        json!(ids)
    }
}

/// ruma refuses to hash or sign oversized PDUs; that is the sender's fault.
fn too_large_or(error: JsonError, step: &str) -> RequestError {
    match error {
        JsonError::PduTooLarge => RequestError::TooLarge(format!("event is larger than {MAX_PDU_BYTES} bytes")),
        other => RequestError::Internal(format!("{step}: {other}")),
    }
}
