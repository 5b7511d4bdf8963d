//! The checks on receipt of a PDU that need no room state, as the input
//! pipeline runs them (`checks::parse`, then `Parsed::verify`) for the room
//! version the first byte picks. The harness signs the input as its
//! sender's server (and adds the content hash when the input has none), so
//! that inputs get past the signature check to the content hash, redaction
//! and PDU parsing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_fuzz::{ROOM, SERVER, signer, split_version};
use myelin_roomserver::checks::{KeyRing, parse};
use myelin_types::ruma::signatures::{hash_and_sign_event, sign_json};
use myelin_types::ruma::{CanonicalJsonValue, OwnedRoomId};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Some((_, rules, rest)) = split_version(data) else { return };
    let Some(mut value) = myelin_fuzz::json(rest) else { return };
    if let Ok(CanonicalJsonValue::Object(mut object)) = CanonicalJsonValue::try_from(value.clone()) {
        let signer = signer();
        let signed = if object.contains_key("hashes") {
            sign_json(SERVER, &signer.key.keypair, &mut object).is_ok()
        } else {
            hash_and_sign_event(SERVER, &signer.key.keypair, &mut object, &rules.redaction).is_ok()
        };
        if signed {
            value = CanonicalJsonValue::Object(object).into();
        }
    }
    let room_id = value
        .get("room_id")
        .and_then(Value::as_str)
        .and_then(|id| OwnedRoomId::try_from(id).ok())
        .unwrap_or_else(|| OwnedRoomId::try_from(ROOM).expect("valid room id"));
    let Ok(parsed) = parse(value, &room_id, &rules) else { return };
    let event_id = parsed.event_id.clone();
    if let Ok(received) = parsed.verify(&KeyRing::new(signer()), &rules) {
        assert_eq!(received.event_id, event_id);
        assert_eq!(received.pdu.event_id, event_id);
    }
});
