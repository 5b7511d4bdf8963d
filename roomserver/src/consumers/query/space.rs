//! One room of a space hierarchy, summarised from its current state, and
//! whether a user or another server may see it: the client API walks
//! spaces with it and the federation API answers `/hierarchy`.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#spaces>

use myelin_storage::Db;
use ruma::{RoomId, ServerName, UserId};
use serde_json::{Map, Value, json};

use crate::api::{QueryOk, Reader};
use crate::error::RequestError;
use crate::storage::Tx;

/// Join rules under which anyone may see the room's summary.
const OPEN_JOIN_RULES: &[&str] = &["public", "knock", "knock_restricted"];

static NULL: Value = Value::Null;

pub(super) async fn answer(db: &Db, room_id: &RoomId, reader: &Reader) -> Result<QueryOk, RequestError> {
    let mut tx = Tx::read(db).await?;
    let version =
        tx.room(room_id.as_str()).await?.ok_or_else(|| RequestError::NotFound(format!("unknown room {room_id}")))?;
    let state = State::load(&mut tx, room_id).await?;
    let joined = tx.joined_users(room_id.as_str()).await?.len();
    let allowed = state.allowed_room_ids();
    let accessible = state.open() || member(&mut tx, room_id.as_str(), reader, true).await? || {
        let restricted = matches!(state.join_rule(), "restricted" | "knock_restricted");
        restricted && joined_any(&mut tx, &allowed, reader).await?
    };
    let banned = match reader {
        Reader::User(user) => tx.membership(room_id.as_str(), user.as_str()).await?.is_some_and(|(m, _)| m == "ban"),
        Reader::Server(_) => false,
    };
    let mut room = state.summary(room_id, joined, &version.version);
    room["allowed_room_ids"] = json!(allowed);
    Ok(QueryOk::SpaceRoom { room, accessible: accessible && !banned })
}

/// Whether the reader is in the room: joined (or, for a user and
/// `invited_too`, invited); for a server, one of its users joined.
async fn member(tx: &mut Tx, room_id: &str, reader: &Reader, invited_too: bool) -> Result<bool, RequestError> {
    Ok(match reader {
        Reader::User(user) => tx
            .membership(room_id, user.as_str())
            .await?
            .is_some_and(|(m, _)| m == "join" || (invited_too && m == "invite")),
        Reader::Server(server) => server_joined(tx, room_id, server).await?,
    })
}

async fn server_joined(tx: &mut Tx, room_id: &str, server: &ServerName) -> Result<bool, RequestError> {
    // The query's LIKE may match more on SQLite: compare parsed names.
    let users = tx.joined_users_of(room_id, server.as_str()).await?;
    Ok(users.iter().any(|user| <&UserId>::try_from(user.as_str()).is_ok_and(|u| u.server_name() == server)))
}

/// Whether the reader is joined to one of `rooms` (a restricted join rule's allow list).
async fn joined_any(tx: &mut Tx, rooms: &[String], reader: &Reader) -> Result<bool, RequestError> {
    for room in rooms {
        if member(tx, room, reader, false).await? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The current state events a summary reads: `(type, state_key, PDU)`.
struct State {
    events: Vec<(String, String, Value)>,
}

impl State {
    async fn load(tx: &mut Tx, room_id: &RoomId) -> Result<Self, RequestError> {
        let mut events = Vec::new();
        for (kind, key, event_id) in tx.current_state(room_id.as_str()).await? {
            if kind == "m.room.member" {
                continue;
            }
            let pdu =
                tx.event_pdu(&event_id).await?.ok_or_else(|| RequestError::Internal(format!("{event_id} missing")))?;
            events.push((kind, key, serde_json::from_str(&pdu)?));
        }
        Ok(Self { events })
    }

    fn content(&self, kind: &str) -> &Value {
        self.events.iter().find(|(k, key, _)| k == kind && key.is_empty()).map_or(&NULL, |(_, _, pdu)| &pdu["content"])
    }

    fn text(&self, kind: &str, field: &str) -> Option<&str> {
        self.content(kind)[field].as_str()
    }

    fn join_rule(&self) -> &str {
        self.text("m.room.join_rules", "join_rule").unwrap_or("invite")
    }

    fn world_readable(&self) -> bool {
        self.text("m.room.history_visibility", "history_visibility") == Some("world_readable")
    }

    fn open(&self) -> bool {
        self.world_readable() || OPEN_JOIN_RULES.contains(&self.join_rule())
    }

    /// The rooms whose members a restricted join rule admits.
    fn allowed_room_ids(&self) -> Vec<String> {
        if !matches!(self.join_rule(), "restricted" | "knock_restricted") {
            return Vec::new();
        }
        let allow = self.content("m.room.join_rules")["allow"].as_array().cloned().unwrap_or_default();
        allow
            .iter()
            .filter(|entry| entry["type"] == "m.room_membership")
            .filter_map(|entry| entry["room_id"].as_str().map(str::to_owned))
            .collect()
    }

    /// `m.space.child` events with a usable `via`, stripped (with their
    /// timestamp, which orders children without an `order`).
    fn children_state(&self) -> Vec<Value> {
        let has_via = |content: &Value| content["via"].as_array().is_some_and(|via| !via.is_empty());
        self.events
            .iter()
            .filter(|(kind, _, pdu)| kind == "m.space.child" && has_via(&pdu["content"]))
            .map(|(_, key, pdu)| {
                json!({
                    "type": "m.space.child", "state_key": key, "sender": pdu["sender"],
                    "content": pdu["content"], "origin_server_ts": pdu["origin_server_ts"],
                })
            })
            .collect()
    }

    fn summary(&self, room_id: &RoomId, joined: usize, version: &str) -> Value {
        let mut room = Map::new();
        room.insert("room_id".to_owned(), json!(room_id.as_str()));
        room.insert("num_joined_members".to_owned(), json!(joined));
        room.insert("world_readable".to_owned(), json!(self.world_readable()));
        room.insert(
            "guest_can_join".to_owned(),
            json!(self.text("m.room.guest_access", "guest_access") == Some("can_join")),
        );
        room.insert("join_rule".to_owned(), json!(self.join_rule()));
        room.insert("room_version".to_owned(), json!(version));
        room.insert("children_state".to_owned(), json!(self.children_state()));
        let optional = [
            ("name", self.text("m.room.name", "name")),
            ("topic", self.text("m.room.topic", "topic")),
            ("canonical_alias", self.text("m.room.canonical_alias", "alias")),
            ("avatar_url", self.text("m.room.avatar", "url")),
            ("room_type", self.text("m.room.create", "type")),
            ("encryption", self.text("m.room.encryption", "algorithm")),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                room.insert(key.to_owned(), json!(value));
            }
        }
        Value::Object(room)
    }
}
