//! Who is notified of an event and how (DESIGN.md invariant 8): local users
//! joined to the room after the event (or the local invitee of an invite),
//! except the sender and users ignoring the sender, who may see the event
//! under history visibility (`myelin-visibility`, the rules `/sync` uses),
//! and whose push rules (ruma's evaluation with the room's member count,
//! their display name and the power levels) say `notify`. Historical
//! events never get here; rejected and soft-failed ones never reach
//! `roomserver.output` at all.

use std::collections::BTreeSet;

use myelin_config::PushContent;
use myelin_roomserver::api::{NewRoomEvent, StateDelta};
use myelin_types::events::client_event;
use myelin_types::ruma::events::room::power_levels::{RoomPowerLevels, RoomPowerLevelsSource};
use myelin_types::ruma::push::{PushConditionPowerLevelsCtx, PushConditionRoomCtx};
use myelin_types::ruma::room_version_rules::RoomVersionRules;
use myelin_types::ruma::serde::Raw;
use myelin_types::ruma::{OwnedUserId, RoomId, RoomVersionId, ServerName, UInt};
use myelin_visibility::{HistoryVisibility, RoomView};
use serde_json::{Map, Value, json};

use crate::PusherError;
use crate::gating::{self, EventInfo};
use crate::rules::PushRules;
use crate::storage::{
    EventWrite, Membership, NewDelivery, NewNotification, RoomModel, RoomSnapshot, StateEntry, Storage,
};

const MEMBER: &str = "m.room.member";

pub struct Notifier<'a> {
    pub storage: &'a Storage,
    pub rules: &'a PushRules,
    pub server_name: &'a ServerName,
    pub content: PushContent,
    /// Events older than this (by `origin_server_ts`) are counted but not
    /// sent to gateways: a pusher reading `roomserver.output` from the
    /// start (a new deployment of it) must not replay years of pushes.
    pub max_push_age_ms: i64,
}

/// What recording an event produced: the write, and the users whose counts changed.
pub struct Outcome<'a> {
    pub write: EventWrite<'a>,
    pub notified: BTreeSet<String>,
}

fn text<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

/// The `set_tweak` actions as the tweaks object a gateway receives.
fn tweaks(actions: &Value) -> Map<String, Value> {
    let mut tweaks = Map::new();
    for action in actions.as_array().into_iter().flatten() {
        if let Some(name) = text(action, "set_tweak") {
            tweaks.insert(name.to_owned(), action.get("value").cloned().unwrap_or(Value::Bool(true)));
        }
    }
    tweaks
}

/// The thread an event belongs to (its root's id), `""` for the main timeline.
fn thread_of(content: &Value) -> String {
    let relates = content.get("m.relates_to");
    match relates.and_then(|r| text(r, "rel_type")) {
        Some("m.thread") => relates.and_then(|r| text(r, "event_id")).unwrap_or_default().to_owned(),
        _ => String::new(),
    }
}

/// The power levels context ruma needs for `sender_notification_permission`.
fn power_levels(room: &RoomSnapshot) -> PushConditionPowerLevelsCtx {
    let version = room.room_version.as_deref().and_then(|v| RoomVersionId::try_from(v).ok());
    // An unknown version is one the room server accepted anyway: assume the newest rules.
    let authorization = version.and_then(|v| v.rules()).unwrap_or(RoomVersionRules::V12).authorization;
    let mut creators = Vec::new();
    if let Some(create) = room.get("m.room.create", "") {
        creators.extend(OwnedUserId::try_from(create.sender.as_str()).ok());
        let additional = create.content.get("additional_creators").and_then(Value::as_array);
        creators.extend(additional.into_iter().flatten().filter_map(|u| u.as_str()?.try_into().ok()));
    }
    let source = match room.get("m.room.power_levels", "").map(|e| serde_json::from_value(e.content.clone())) {
        Some(Ok(content)) => RoomPowerLevelsSource::Original(content),
        _ => RoomPowerLevelsSource::None,
    };
    RoomPowerLevels::new(source, &authorization, creators).into()
}

/// One user's verdict from their push rules.
struct Notified<'a> {
    user: &'a str,
    highlight: bool,
    actions: Value,
    tweaks: Map<String, Value>,
}

impl Notifier<'_> {
    /// Apply the event to the room model and decide who is notified. On an
    /// error the model is half updated: the caller must not keep it.
    pub async fn evaluate<'e>(
        &self,
        new: &'e NewRoomEvent,
        room: &mut RoomModel,
        now_ms: i64,
    ) -> Result<Outcome<'e>, PusherError> {
        let event = &new.event;
        let pdu = &event.pdu;
        let room_id = event.room_id.as_str();
        // Backfilled history sits before everything recorded: at position 0
        // a receipt for it marks nothing read, and it moves no current state.
        let pos = if new.historical { 0 } else { room.snapshot.last_pos + 1 };
        let sender = text(pdu, "sender").unwrap_or_default();
        let event_type = text(pdu, "type").unwrap_or_default();
        let state_key = text(pdu, "state_key");
        let content = pdu.get("content").cloned().unwrap_or_else(|| json!({}));

        let mut write = EventWrite {
            room_id,
            room_version: &new.room_version,
            event_id: event.event_id.as_str(),
            pos,
            ts: pdu.get("origin_server_ts").and_then(Value::as_i64).unwrap_or_default(),
            event: client_event(pdu, event.event_id.as_str(), room_id),
            added: Vec::new(),
            removed: Vec::new(),
            memberships: Vec::new(),
            visibility: None,
            notifications: Vec::new(),
            deliveries: Vec::new(),
            now_ms,
        };
        let mut notified = BTreeSet::new();
        if new.historical {
            return Ok(Outcome { write, notified });
        }
        apply_delta(room, &new.state_delta, pos, &mut write);
        room.snapshot.room_version.get_or_insert_with(|| new.room_version.clone());

        let joined: Vec<&str> = room.snapshot.memberships().filter(|(_, m)| *m == "join").map(|(u, _)| u).collect();
        let mut candidates: BTreeSet<&str> = joined.iter().copied().collect();
        if event_type == MEMBER && text(&content, "membership") == Some("invite") {
            candidates.extend(state_key);
        }
        let ignoring: BTreeSet<String> = self.storage.ignoring(sender).await?.into_iter().collect();
        candidates.retain(|user| {
            *user != sender
                && !ignoring.contains(*user)
                && OwnedUserId::try_from(*user).is_ok_and(|u| u.server_name() == self.server_name)
        });
        if candidates.is_empty() {
            return Ok(Outcome { write, notified });
        }

        let member_count = UInt::try_from(joined.len() as u64).unwrap_or_default();
        let raw: Raw<Value> = Raw::new(pdu).map_err(|e| PusherError::Corrupt(e.to_string()))?;
        let ctx = RuleContext { room_id: &event.room_id, member_count, power_levels: power_levels(&room.snapshot) };
        let mut verdicts = Vec::new();
        for user in candidates {
            let changes = room.memberships.get(user).map_or(&[][..], Vec::as_slice);
            if !RoomView::new(changes, room.history.clone()).can_see(pos) {
                continue;
            }
            if let Some(verdict) = self.rules_verdict(user, &raw, &ctx, &room.snapshot).await? {
                verdicts.push(verdict);
            }
        }

        let thread_id = thread_of(&content);
        for verdict in &verdicts {
            write.notifications.push(NewNotification {
                user_id: verdict.user.to_owned(),
                thread_id: thread_id.clone(),
                highlight: verdict.highlight,
                actions: verdict.actions.clone(),
            });
            notified.insert(verdict.user.to_owned());
        }
        if now_ms.saturating_sub(write.ts) <= self.max_push_age_ms {
            let info = EventInfo {
                event_id: event.event_id.as_str(),
                room_id,
                event_type,
                sender,
                sender_display_name: display_name(&room.snapshot, sender),
                room_name: room
                    .snapshot
                    .get("m.room.name", "")
                    .and_then(|e| text(&e.content, "name"))
                    .filter(|n| !n.is_empty()),
                content: &content,
                user_is_target: None,
            };
            let encrypted = room.snapshot.get("m.room.encryption", "").is_some();
            write.deliveries = self.deliveries(&verdicts, info, state_key, encrypted).await?;
        }
        Ok(Outcome { write, notified })
    }

    /// What the user's push rules say of the event; `None`: no notification.
    async fn rules_verdict<'u>(
        &self,
        user: &'u str,
        raw: &Raw<Value>,
        ctx: &RuleContext<'_>,
        room: &RoomSnapshot,
    ) -> Result<Option<Notified<'u>>, PusherError> {
        let user_id = OwnedUserId::try_from(user).map_err(|e| PusherError::Corrupt(e.to_string()))?;
        let room_ctx = PushConditionRoomCtx::new(
            ctx.room_id.to_owned(),
            ctx.member_count,
            user_id.clone(),
            display_name(room, user).unwrap_or_default().to_owned(),
        )
        .with_power_levels(ctx.power_levels.clone());
        let ruleset = self.rules.cached(&user_id).await?;
        let actions = ruleset.get_actions(raw, &room_ctx).await;
        if !actions.iter().any(|a| a.should_notify()) {
            return Ok(None);
        }
        let highlight = actions.iter().any(|a| a.is_highlight());
        let actions = serde_json::to_value(actions).map_err(|e| PusherError::Corrupt(e.to_string()))?;
        let tweaks = tweaks(&actions);
        Ok(Some(Notified { user, highlight, actions, tweaks }))
    }

    /// The gateway requests for the notified users' HTTP pushers, read in
    /// one go for all of them.
    async fn deliveries(
        &self,
        verdicts: &[Notified<'_>],
        mut info: EventInfo<'_>,
        state_key: Option<&str>,
        encrypted: bool,
    ) -> Result<Vec<NewDelivery>, PusherError> {
        let users: Vec<&str> = verdicts.iter().map(|v| v.user).collect();
        let pushers_of = self.storage.pushers_of(&users).await?;
        let has_http = |user: &str| pushers_of.get(user).is_some_and(|ps| ps.iter().any(|p| p.kind == "http"));
        let pushed: Vec<&str> = users.iter().copied().filter(|u| has_http(u)).collect();
        if pushed.is_empty() {
            return Ok(Vec::new());
        }
        let unread = self.storage.unread_totals(&pushed).await?;
        // An admin's limit for this room only ever lowers the server's level.
        let room_limit = self.storage.room_content(info.room_id).await?;
        let server_level = room_limit.map_or(self.content, |limit| limit.min(self.content));
        let mut deliveries = Vec::new();
        for verdict in verdicts.iter().filter(|v| has_http(v.user)) {
            // This event's notification is not stored yet.
            let unread = unread.get(verdict.user).copied().unwrap_or(0) + 1;
            info.user_is_target = (info.event_type == MEMBER).then(|| state_key == Some(verdict.user));
            let high = verdict.highlight || verdict.tweaks.contains_key("sound");
            for pusher in pushers_of[verdict.user].iter().filter(|p| p.kind == "http") {
                let Some(url) = text(&pusher.data, "url") else { continue };
                let level = gating::effective(server_level, &pusher.data, encrypted);
                let device = gating::device(&pusher.app_id, &pusher.pushkey, &pusher.data, &verdict.tweaks);
                deliveries.push(NewDelivery {
                    user_id: verdict.user.to_owned(),
                    app_id: pusher.app_id.clone(),
                    pushkey: pusher.pushkey.clone(),
                    url: url.to_owned(),
                    body: gating::body(level, &info, unread, device, high),
                });
            }
        }
        Ok(deliveries)
    }
}

/// What every member's rule evaluation for one event shares.
struct RuleContext<'a> {
    room_id: &'a RoomId,
    member_count: UInt,
    power_levels: PushConditionPowerLevelsCtx,
}

fn display_name<'r>(room: &'r RoomSnapshot, user: &str) -> Option<&'r str> {
    room.get(MEMBER, user).and_then(|m| text(&m.content, "displayname"))
}

/// Move the model to the state after the event at `pos`, noting the
/// changes in `write` for the database.
fn apply_delta(room: &mut RoomModel, delta: &StateDelta, pos: i64, write: &mut EventWrite<'_>) {
    for key in &delta.removed {
        room.snapshot.state.remove(key);
    }
    write.removed = delta.removed.clone();
    for state in &delta.added {
        let (Some(t), Some(k)) = (text(&state.pdu, "type"), text(&state.pdu, "state_key")) else { continue };
        let entry = StateEntry {
            sender: text(&state.pdu, "sender").unwrap_or_default().to_owned(),
            content: state.pdu.get("content").cloned().unwrap_or_else(|| json!({})),
        };
        if t == MEMBER {
            let membership = text(&entry.content, "membership").unwrap_or("leave").to_owned();
            room.memberships.entry(k.to_owned()).or_default().push(Membership { pos, membership: membership.clone() });
            write.memberships.push((k.to_owned(), membership));
        }
        if t == "m.room.history_visibility" && k.is_empty() {
            let visibility = HistoryVisibility::from_content(Some(&entry.content));
            room.history.push(myelin_visibility::HistoryChange { pos, visibility });
            write.visibility = Some(visibility);
        }
        room.snapshot.state.insert((t.to_owned(), k.to_owned()), entry.clone());
        write.added.push(((t.to_owned(), k.to_owned()), entry));
    }
    room.snapshot.last_pos = pos;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_and_tweaks_are_read_from_json() {
        assert_eq!(thread_of(&json!({"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}})), "$root");
        assert_eq!(thread_of(&json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": "$x"}})), "");
        assert_eq!(thread_of(&json!({})), "");
        let actions = json!(["notify", {"set_tweak": "sound", "value": "default"}, {"set_tweak": "highlight"}]);
        assert_eq!(Value::Object(tweaks(&actions)), json!({"sound": "default", "highlight": true}));
    }
}
