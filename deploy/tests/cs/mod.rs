//! Client-server endpoints beyond the everyday ones, each against a real
//! server: forgetting rooms, reports, jumping to a date, room upgrades,
//! OpenID tokens, registration tokens and refresh tokens, spaces, and
//! other servers' media, aliases, profiles and public rooms, and
//! application services acting as their users.

mod appservice;
mod forget;
mod remote;
mod reports;
mod spaces;
mod timestamp;
mod upgrade;

use std::time::Duration;

use serde_json::Value;

use crate::harness::Server;

/// Poll `/sync` (initial, with `filter`) until `check` holds; the last body.
async fn sync_until(server: &Server, token: &str, filter: &str, check: impl Fn(&Value) -> bool) -> Value {
    let path = format!("/_matrix/client/v3/sync?filter={}", crate::urlencode(filter));
    let mut body = Value::Null;
    for _ in 0..100 {
        let (status, reply) = server.get(token, &path).await;
        assert!(status.is_success(), "sync: {reply}");
        body = reply;
        if check(&body) {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("sync never showed what was expected: {body}");
}
