//! The authorization rules as the input pipeline runs them on a received
//! event (`checks::allowed_by_auth_events`, then `checks::allowed_by_state`)
//! against a fixed room of the version the first byte picks. The event
//! reaches them through the parser of stored PDUs (`Pdu::parse`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_fuzz::{FixedRoom, ROOM, split_version};
use myelin_roomserver::checks::{Pdu, allowed_by_auth_events, allowed_by_state, v12_create};
use myelin_types::ruma::{EventId, RoomId};

fuzz_target!(|data: &[u8]| {
    let Some((version, rules, rest)) = split_version(data) else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let Ok(pdu) = Pdu::parse(EventId::parse("$fuzzed").expect("valid event id"), text) else { return };
    let room = FixedRoom::of(&version);
    let room_id = <&RoomId>::try_from(ROOM).expect("valid room id");
    let create = v12_create(&rules, room_id, &room.events);
    let _ = allowed_by_auth_events(&rules, &pdu, &room.events, create);
    let _ = allowed_by_state(&rules, &pdu, &room.state, &room.events, create);
});
