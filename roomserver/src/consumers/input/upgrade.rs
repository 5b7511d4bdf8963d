//! Room upgrades: the replacement room, the old room's tombstone and its
//! restricted power levels in one transaction, so that the permission
//! check and every event of both rooms are decided in one place and an
//! upgrade happens whole or not at all. The client API moves the aliases
//! it stores once the room server answers.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#server-behaviour-19>

use serde_json::{Value, json};

use super::{InputConsumer, Outcome, commit_reply};
use crate::api::{InputOk, NewRoomEvent, UpgradeRoom};
use crate::error::RequestError;
use crate::events::create_room::{self, PlannedEvent};
use crate::events::upgrade::{self, OldRoom, TOMBSTONE_BODY, TRANSFERABLE, Upgrade};
use crate::events::{Accepted, LocalEvent, Room, Signer};
use crate::producers::output::new_room_event;
use crate::storage::Tx;

/// The output record of an event of `room`.
fn output(room: &Room, accepted: Accepted) -> NewRoomEvent {
    new_room_event(accepted.event, accepted.is_state, room.version.to_string(), None)
}

/// Append an event of the plan by `sender`.
async fn append(
    room: &mut Room,
    tx: &mut Tx,
    signer: &Signer,
    sender: &ruma::UserId,
    event: &PlannedEvent,
    now: u64,
) -> Result<NewRoomEvent, RequestError> {
    let local = LocalEvent {
        sender,
        event_type: &event.event_type,
        state_key: Some(&event.state_key),
        content: &event.content,
    };
    let accepted = room.append(tx, signer, local, now).await?;
    Ok(output(room, accepted))
}

/// Append an event the upgrade can do without: one the auth rules refuse
/// is left out (as Synapse does when it cannot restrict the old room).
async fn append_if_allowed(
    room: &mut Room,
    tx: &mut Tx,
    signer: &Signer,
    sender: &ruma::UserId,
    event: &PlannedEvent,
    now: u64,
) -> Result<Option<NewRoomEvent>, RequestError> {
    match append(room, tx, signer, sender, event, now).await {
        Ok(output) => Ok(Some(output)),
        Err(RequestError::Forbidden(reason)) => {
            let (room_id, event_type) = (&room.room_id, &event.event_type);
            tracing::warn!(%room_id, %event_type, state_key = %event.state_key, %reason, "left out of a room upgrade");
            Ok(None)
        }
        Err(other) => Err(other),
    }
}

impl InputConsumer {
    /// `POST /rooms/{roomId}/upgrade`.
    ///
    /// Spec: <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidupgrade>
    pub(super) async fn upgrade_room(
        &self,
        correlation_id: &str,
        request: UpgradeRoom,
    ) -> Result<Outcome, RequestError> {
        self.check_local(&request.requester)?;
        let version = create_room::room_version(Some(request.new_version.as_str()), &self.default_room_version)?;
        let requester = &request.requester;
        let now = self.bus.clock().now_ms();
        let mut tx = Tx::write(&self.db).await?;
        let Some(mut old) = Room::load(&mut tx, &request.room_id).await? else {
            return Err(RequestError::NotFound(format!("unknown room {}", request.room_id)));
        };
        // The spec's first step. The real tombstone names the new room, so
        // it is built last; this one is only checked (the content does not
        // matter to the auth rules).
        let probe = json!({ "body": TOMBSTONE_BODY, "replacement_room": request.room_id });
        let tombstone =
            LocalEvent { sender: requester, event_type: "m.room.tombstone", state_key: Some(""), content: &probe };
        old.prepare(&mut tx, &self.signer, tombstone, now).await.map_err(|error| match error {
            RequestError::Forbidden(reason) => {
                RequestError::Forbidden(format!("You cannot upgrade this room: {reason}"))
            }
            other => other,
        })?;

        let (create_sender, create_content) = old
            .current_state(&mut tx, "m.room.create", "")
            .await?
            .ok_or_else(|| RequestError::Internal(format!("room {} has no create event", request.room_id)))?;
        let content = |found: Option<(ruma::OwnedUserId, Value)>| found.map(|(_, content)| content);
        let power_levels = content(old.current_state(&mut tx, "m.room.power_levels", "").await?);
        let canonical_alias = content(old.current_state(&mut tx, "m.room.canonical_alias", "").await?);
        let mut transferable = Vec::new();
        for event_type in TRANSFERABLE {
            if let Some(content) = content(old.current_state(&mut tx, event_type, "").await?) {
                transferable.push((*event_type, content));
            }
        }
        let mut bans = Vec::new();
        for user in tx.banned_users(request.room_id.as_str()).await? {
            if let Some(content) = content(old.current_state(&mut tx, "m.room.member", &user).await?) {
                bans.push((user, content));
            }
        }
        let mut requester_join = request.requester_profile.clone();
        requester_join.insert("membership".into(), json!("join"));
        let plan = upgrade::plan(
            &OldRoom {
                room_id: &request.room_id,
                rules: old.rules(),
                create_sender: &create_sender,
                create_content: &create_content,
                latest_event: old.latest_event(),
                power_levels: power_levels.as_ref(),
                transferable,
                canonical_alias: canonical_alias.as_ref(),
                bans,
            },
            Upgrade {
                requester,
                requester_join: Value::Object(requester_join),
                version,
                additional_creators: &request.additional_creators,
                server_name: &self.signer.server_name,
            },
        )?;

        let (mut new, create) =
            Room::create(&mut tx, &self.signer, plan.version.clone(), requester, &plan.create_content, now).await?;
        let mut outputs = vec![output(&new, create)];
        for event in &plan.events {
            outputs.push(append(&mut new, &mut tx, &self.signer, requester, event, now).await?);
        }
        for ban in &plan.bans {
            outputs.extend(append_if_allowed(&mut new, &mut tx, &self.signer, requester, ban, now).await?);
        }
        if let Some(levels) = plan.final_power_levels {
            let event = PlannedEvent::new("m.room.power_levels", "", levels);
            outputs.push(append(&mut new, &mut tx, &self.signer, requester, &event, now).await?);
        }

        if let Some(content) = plan.old_canonical_alias {
            let event = PlannedEvent::new("m.room.canonical_alias", "", content);
            outputs.extend(append_if_allowed(&mut old, &mut tx, &self.signer, requester, &event, now).await?);
        }
        let content = json!({ "body": TOMBSTONE_BODY, "replacement_room": new.room_id });
        let tombstone = PlannedEvent::new("m.room.tombstone", "", content);
        outputs.push(append(&mut old, &mut tx, &self.signer, requester, &tombstone, now).await?);
        if let Some(levels) = plan.old_power_levels {
            let event = PlannedEvent::new("m.room.power_levels", "", levels);
            outputs.extend(append_if_allowed(&mut old, &mut tx, &self.signer, requester, &event, now).await?);
        }

        let reply = InputOk::RoomUpgraded { replacement_room: new.room_id.clone() };
        commit_reply(tx, correlation_id, reply, outputs).await
    }
}
