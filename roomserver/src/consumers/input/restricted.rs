//! `ReceivedJoin`: another server asks this one to countersign a join of a
//! restricted room that names one of this server's users as its
//! authoriser. Never a signing oracle (DESIGN.md invariant 7): the event
//! must be the join of a user of the origin, the join rules as this server
//! sees them must let that user in, and the content hash must be the
//! event's own; the auth rules then check the named user's membership and
//! power when the signed join goes through the pipeline.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#restricted-rooms>

use ruma::signatures::{add_content_hash_to_event, sign_event};
use ruma::{CanonicalJsonObject, CanonicalJsonValue, OwnedUserId, RoomId, ServerName, UserId};
use serde_json::Value;

use super::{InputConsumer, Outcome};
use crate::api::{InputOk, ReceivedJoin};
use crate::error::RequestError;
use crate::events::Room;
use crate::storage::Tx;

impl InputConsumer {
    pub(super) async fn received_join(
        &self,
        correlation_id: &str,
        join: ReceivedJoin,
    ) -> Result<Outcome, RequestError> {
        let joiner = joiner(&join.event, &join.room_id, &join.origin)?;
        let via = join
            .event
            .pointer("/content/join_authorised_via_users_server")
            .and_then(Value::as_str)
            .and_then(|via| UserId::parse(via).ok())
            .ok_or_else(|| RequestError::BadJson("the join names no valid join_authorised_via_users_server".into()))?;
        if via.server_name() != self.signer.server_name {
            return Err(RequestError::Forbidden(format!("{via} is not a user of this server")));
        }
        let mut tx = Tx::read(&self.db).await?;
        let mut room = Room::load(&mut tx, &join.room_id)
            .await?
            .ok_or_else(|| RequestError::NotFound(format!("unknown room {}", join.room_id)))?;
        room.join_authoriser(&mut tx, &joiner, &self.signer.server_name).await?;
        tx.commit().await?;

        let mut event = match CanonicalJsonValue::try_from(join.event) {
            Ok(CanonicalJsonValue::Object(object)) => object,
            _ => return Err(RequestError::BadJson("the join is not a canonical JSON object".into())),
        };
        check_content_hash(&event)?;
        let rules = room.rules();
        sign_event(self.signer.server_name.as_str(), &self.signer.key.keypair, &mut event, &rules.redaction)
            .map_err(|e| RequestError::BadJson(format!("the join cannot be signed: {e}")))?;
        let reply = InputOk::JoinSigned { event: serde_json::to_value(&event)? };
        self.finish(correlation_id, reply, Vec::new()).await
    }
}

/// The user joining `room_id` in `event`, who must belong to `origin`.
fn joiner(event: &Value, room_id: &RoomId, origin: &ServerName) -> Result<OwnedUserId, RequestError> {
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    let is_join = field("room_id") == Some(room_id.as_str())
        && field("type") == Some("m.room.member")
        && event.pointer("/content/membership").and_then(Value::as_str) == Some("join")
        && field("state_key").is_some()
        && field("state_key") == field("sender");
    if !is_join {
        return Err(RequestError::BadJson("the event is not a user's join of this room".into()));
    }
    let sender = field("sender")
        .and_then(|sender| UserId::parse(sender).ok())
        .ok_or_else(|| RequestError::BadJson("the join's sender is not a user id".into()))?;
    if sender.server_name() != origin {
        return Err(RequestError::Forbidden(format!("{sender} does not belong to {origin}")));
    }
    Ok(sender)
}

/// Signing covers the hash only: a join whose hash is not its own would
/// come back redacted by the pipeline, with this server's signature on it.
fn check_content_hash(event: &CanonicalJsonObject) -> Result<(), RequestError> {
    let mut rehashed = event.clone();
    add_content_hash_to_event(&mut rehashed)
        .map_err(|e| RequestError::BadJson(format!("the join cannot be hashed: {e}")))?;
    if rehashed.get("hashes") != event.get("hashes") {
        return Err(RequestError::Forbidden("the join's content hash does not match".into()));
    }
    Ok(())
}
