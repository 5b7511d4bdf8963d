//! Joins of restricted rooms (join rules `restricted`, v8 on, and
//! `knock_restricted`, v10 on): a user who is neither invited nor joined
//! gets in when they are joined to one of the rooms the join rules allow,
//! and a user of the resident server with the power to invite vouches for
//! the join in `join_authorised_via_users_server`.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#restricted-rooms> and
//! <https://spec.matrix.org/v1.16/server-server-api/#restricted-rooms>

use myelin_types::redaction::{RoomAuth, power_levels};
use ruma::{OwnedUserId, ServerName, UserId};
use serde_json::{Value, json};

use super::{Room, pdu_json};
use crate::error::RequestError;
use crate::storage::Tx;

impl Room {
    /// Who of `server`'s users authorises `user`'s join: `None` when the
    /// join needs no authorisation (the room is not restricted, or the
    /// user is already invited or joined). Refused with `M_FORBIDDEN` when
    /// the user is in none of the allowed rooms this server knows,
    /// `M_UNABLE_TO_AUTHORISE_JOIN` when it knows none of them, and
    /// `M_UNABLE_TO_GRANT_JOIN` when none of `server`'s users in the room
    /// may invite.
    pub async fn join_authoriser(
        &mut self,
        tx: &mut Tx,
        user: &UserId,
        server: &ServerName,
    ) -> Result<Option<OwnedUserId>, RequestError> {
        let Some(allow) = self.restricted_allow_list(tx).await? else { return Ok(None) };
        let membership = match self.state_event(tx, "m.room.member", user.as_str()).await? {
            Some(pdu) => serde_json::from_str::<Value>(pdu.content.get())?["membership"].clone(),
            None => Value::Null,
        };
        if membership == "join" || membership == "invite" {
            return Ok(None);
        }
        self.check_allowed(tx, user, &allow).await?;
        self.inviter_of(tx, server).await?.map(Some).ok_or_else(|| {
            RequestError::UnableToGrantJoin(format!("No user of {server} in {} may invite {user}", self.room_id))
        })
    }

    /// The rooms whose members may join, when the current join rule is one
    /// of the restricted ones the room's version has.
    async fn restricted_allow_list(&mut self, tx: &mut Tx) -> Result<Option<Vec<String>>, RequestError> {
        let Some(pdu) = self.state_event(tx, "m.room.join_rules", "").await? else { return Ok(None) };
        let content: Value = serde_json::from_str(pdu.content.get())?;
        let authorization = &self.rules.authorization;
        let restricted = match content["join_rule"].as_str() {
            Some("restricted") => authorization.restricted_join_rule,
            Some("knock_restricted") => authorization.knock_restricted_join_rule,
            _ => false,
        };
        if !restricted {
            return Ok(None);
        }
        let entries = content["allow"].as_array().cloned().unwrap_or_default();
        let rooms = entries
            .iter()
            .filter(|entry| entry["type"] == "m.room_membership")
            .filter_map(|entry| entry["room_id"].as_str().map(str::to_owned))
            .collect();
        Ok(Some(rooms))
    }

    /// `user` is joined to one of the `allow`ed rooms, as far as this server knows them.
    async fn check_allowed(&self, tx: &mut Tx, user: &UserId, allow: &[String]) -> Result<(), RequestError> {
        let mut known_any = false;
        for room_id in allow {
            if tx.room(room_id).await?.is_none() {
                continue;
            }
            known_any = true;
            if tx.membership(room_id, user.as_str()).await?.is_some_and(|(membership, _)| membership == "join") {
                return Ok(());
            }
        }
        if known_any {
            Err(RequestError::Forbidden(format!("{user} is in none of the rooms that let users join {}", self.room_id)))
        } else {
            Err(RequestError::UnableToAuthoriseJoin(format!(
                "This server knows none of the rooms that let users join {}",
                self.room_id
            )))
        }
    }

    /// The joined user of `server` with the most power, if it may invite
    /// (the lowest user id among equals, so the choice is stable).
    async fn inviter_of(&mut self, tx: &mut Tx, server: &ServerName) -> Result<Option<OwnedUserId>, RequestError> {
        let create = match self.state_event(tx, "m.room.create", "").await? {
            Some(pdu) => json!({"sender": pdu.sender, "content": serde_json::from_str::<Value>(pdu.content.get())?}),
            None => return Ok(None),
        };
        let levels = match self.state_event(tx, "m.room.power_levels", "").await? {
            Some(pdu) => Some(pdu_json(pdu)?),
            None => None,
        };
        let room = RoomAuth { rules: &self.rules, create: Some(&create), power_levels: levels.as_ref() };
        let levels = power_levels(&room);
        let mut candidates: Vec<OwnedUserId> = tx
            .joined_users_of(self.room_id.as_str(), server.as_str())
            .await?
            .into_iter()
            .filter_map(|id| OwnedUserId::try_from(id).ok())
            .filter(|id| id.server_name() == server && levels.user_can_invite(id))
            .collect();
        candidates.sort_by(|a, b| levels.for_user(b).cmp(&levels.for_user(a)).then_with(|| a.cmp(b)));
        Ok(candidates.into_iter().next())
    }
}
