//! Whether a server may take part in a room under its current
//! `m.room.server_acl`, asked by the federation API for every room-scoped
//! request and every room of a `/send` transaction.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#server-access-control-lists-acls>

use myelin_storage::Db;
use ruma::events::room::server_acl::RoomServerAclEventContent;
use ruma::{RoomId, ServerName};
use serde_json::Value;

use crate::api::QueryOk;
use crate::error::RequestError;
use crate::storage::Tx;

pub(super) async fn answer(db: &Db, room_id: &RoomId, server: &ServerName) -> Result<QueryOk, RequestError> {
    let mut tx = Tx::read(db).await?;
    let Some((_, pdu)) = tx.current_state_event(room_id.as_str(), "m.room.server_acl", "").await? else {
        return Ok(QueryOk::ServerAllowed { allowed: true });
    };
    let pdu: Value = serde_json::from_str(&pdu)?;
    Ok(QueryOk::ServerAllowed { allowed: acl_of(&pdu["content"]).is_allowed(server) })
}

/// The ACL an event's content states, read field by field so that one
/// malformed field falls back to its default instead of voiding the whole
/// ACL: `allow_ip_literals` true, `allow` and `deny` empty (an ACL without
/// a usable `allow` admits nobody, as the spec's default says). ruma's
/// `is_allowed` does the matching the spec defines: `*` and `?` globs,
/// case-insensitive, against the host without its port, deny before allow.
fn acl_of(content: &Value) -> RoomServerAclEventContent {
    let globs = |field: &str| -> Vec<String> {
        content[field]
            .as_array()
            .map(|globs| globs.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let allow_ip_literals = content["allow_ip_literals"].as_bool().unwrap_or(true);
    RoomServerAclEventContent::new(allow_ip_literals, globs("allow"), globs("deny"))
}

#[cfg(test)]
mod tests {
    use ruma::server_name;
    use serde_json::json;

    use super::acl_of;

    #[test]
    fn globs_ports_ip_literals_and_deny_before_allow() {
        let acl = acl_of(&json!({"allow": ["*.example.org", "ex?mple.com"], "deny": ["bad.example.org"]}));
        assert!(acl.is_allowed(server_name!("matrix.example.org")));
        assert!(acl.is_allowed(server_name!("matrix.example.org:8448")), "the port is ignored");
        assert!(acl.is_allowed(server_name!("exAmple.com")));
        assert!(!acl.is_allowed(server_name!("exaample.com")), "? is exactly one character");
        assert!(!acl.is_allowed(server_name!("bad.example.org:443")), "deny wins");
        assert!(!acl.is_allowed(server_name!("example.net")), "not allowed");

        let no_literals = acl_of(&json!({"allow": ["*"], "allow_ip_literals": false}));
        assert!(!no_literals.is_allowed(server_name!("127.0.0.1:8448")));
        assert!(!no_literals.is_allowed(server_name!("[::1]")));
        assert!(no_literals.is_allowed(server_name!("localhost:8448")));
        assert!(acl_of(&json!({"allow": ["*"]})).is_allowed(server_name!("127.0.0.1")), "literals by default");
    }

    #[test]
    fn malformed_fields_take_their_defaults() {
        assert!(!acl_of(&json!({})).is_allowed(server_name!("example.org")), "no allow list admits nobody");
        assert!(!acl_of(&json!({"allow": "*"})).is_allowed(server_name!("example.org")));
        let acl = acl_of(&json!({"allow": ["*", 7], "deny": "evil.org", "allow_ip_literals": "no"}));
        assert!(acl.is_allowed(server_name!("evil.org")), "a deny that is not a list denies nothing");
        assert!(acl.is_allowed(server_name!("10.0.0.1")), "a non-boolean allow_ip_literals stays true");
    }
}
