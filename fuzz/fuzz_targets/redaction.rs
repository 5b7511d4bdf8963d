//! Redaction as the room version says (`myelin_types::redaction::redacted`,
//! which the sync API applies to stored events): any event is redacted or
//! refused without a panic, and redacting twice changes nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myelin_fuzz::split_version;
use myelin_types::redaction::redacted;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Some((_, rules, rest)) = split_version(data) else { return };
    let Some(event) = myelin_fuzz::json(rest) else { return };
    let because = json!({
        "event_id": "$redaction", "type": "m.room.redaction", "sender": "@alice:example.org",
        "content": {}, "origin_server_ts": 1,
    });
    let Some(once) = redacted(&event, &rules, because.clone()) else { return };
    let twice = redacted(&once, &rules, because).expect("a redacted event redacts again");
    assert_eq!(twice, once);
});
