//! The room server's canonical JSON check of a received PDU
//! (`checks::canonical`): any input is accepted or refused, never a panic,
//! and what it accepts serializes to a form it accepts again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_roomserver::checks::canonical;

fuzz_target!(|data: &[u8]| {
    let Some(value) = myelin_fuzz::json(data) else { return };
    let Ok(object) = canonical(value) else { return };
    let text = serde_json::to_string(&object).expect("a canonical object serializes");
    let again = canonical(serde_json::from_str(&text).expect("its serialization is JSON"))
        .expect("a canonical object stays canonical");
    assert_eq!(again, object);
    assert_eq!(serde_json::to_string(&again).expect("serializes"), text);
});
