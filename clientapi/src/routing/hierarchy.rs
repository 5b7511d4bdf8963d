//! `GET /_matrix/client/v1/rooms/{roomId}/hierarchy`
//! <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidhierarchy>
//!
//! Walks a space's `m.space.child` events depth first (the spec's order),
//! asking the room server for each room it has and another server, through
//! the child event's `via`, for each room it does not. A page token says
//! how many rooms of the walk were already sent, and with which
//! `suggested_only` and `max_depth`: each page walks again from the root
//! and skips them, so no walk state is kept between requests.

use std::collections::{HashMap, HashSet};

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::{FederationPerform, Reader};
use myelin_types::MatrixError;
use myelin_types::ruma::{OwnedRoomId, OwnedServerName};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixPath, MatrixQuery};
use crate::producers::{federation, roomserver};
use crate::routing::parse_room_id;
use crate::service::AppState;

/// Rooms per page when the client does not say, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// How deep the walk goes when the client does not say, and at most.
const MAX_DEPTH: usize = 10;
/// The longest `order` the spec allows in an `m.space.child` event.
const MAX_ORDER_LEN: usize = 50;

#[derive(Deserialize)]
pub struct HierarchyQuery {
    from: Option<String>,
    limit: Option<i64>,
    max_depth: Option<i64>,
    suggested_only: Option<bool>,
}

pub async fn hierarchy(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<HierarchyQuery>,
) -> Result<Json<Value>> {
    let root = parse_room_id(&room_id)?;
    let page = Page::from_query(&query)?;
    let mut walk = Walk { state: &state, user: &user, suggested_only: page.suggested_only, seen: HashMap::new() };
    if walk.room(&root, &[]).await?.is_none() {
        return Err(MatrixError::forbidden("You are not allowed to view this room").into());
    }
    let (rooms, next_batch) = walk.page(root, &page).await?;
    let mut body = json!({ "rooms": rooms });
    if let Some(next_batch) = next_batch {
        body["next_batch"] = json!(next_batch);
    }
    Ok(Json(body))
}

/// The page asked for.
struct Page {
    skip: usize,
    limit: usize,
    max_depth: usize,
    suggested_only: bool,
}

impl Page {
    fn from_query(query: &HierarchyQuery) -> Result<Self, MatrixError> {
        let limit = match query.limit {
            None => DEFAULT_LIMIT,
            Some(limit) if limit > 0 => usize::try_from(limit).unwrap_or(MAX_LIMIT).min(MAX_LIMIT),
            Some(_) => return Err(MatrixError::invalid_param("limit must be greater than zero")),
        };
        let max_depth = match query.max_depth {
            None => MAX_DEPTH,
            Some(depth) if depth >= 0 => usize::try_from(depth).unwrap_or(MAX_DEPTH).min(MAX_DEPTH),
            Some(_) => return Err(MatrixError::invalid_param("max_depth must not be negative")),
        };
        let suggested_only = query.suggested_only.unwrap_or(false);
        let mut page = Self { skip: 0, limit, max_depth, suggested_only };
        if let Some(token) = &query.from {
            page.skip = page.parse_token(token)?;
        }
        Ok(page)
    }

    /// `h<walked>_<suggested_only as 0 or 1>_<max_depth>`.
    fn token(&self, walked: usize) -> String {
        format!("h{walked}_{}_{}", u8::from(self.suggested_only), self.max_depth)
    }

    /// How many rooms the token says were sent; `400 M_INVALID_PARAM` for
    /// a token that is not ours or was made with other parameters.
    fn parse_token(&self, token: &str) -> Result<usize, MatrixError> {
        let invalid = || MatrixError::invalid_param(format!("Invalid from token: {token}"));
        let mut parts = token.strip_prefix('h').ok_or_else(invalid)?.split('_');
        let skip = parts.next().and_then(|n| n.parse::<usize>().ok()).ok_or_else(invalid)?;
        if self.token(skip) != token {
            return Err(MatrixError::invalid_param("suggested_only and max_depth cannot change on paginated requests"));
        }
        Ok(skip)
    }
}

/// The rooms seen on one walk: a summary for each room the user may see,
/// `None` for those they may not or that no server could describe.
struct Walk<'a> {
    state: &'a AppState,
    user: &'a AuthedUser,
    suggested_only: bool,
    seen: HashMap<OwnedRoomId, Option<Value>>,
}

impl Walk<'_> {
    /// The rooms of the page, depth first from `root`, and the token of the
    /// next page if the user may see more.
    async fn page(&mut self, root: OwnedRoomId, page: &Page) -> Result<(Vec<Value>, Option<String>)> {
        let mut stack = vec![(root, Vec::new(), 0)];
        let mut visited = HashSet::new();
        let (mut walked, mut rooms) = (0, Vec::new());
        while let Some((room_id, via, depth)) = stack.pop() {
            if !visited.insert(room_id.clone()) {
                continue;
            }
            let Some(room) = self.room(&room_id, &via).await? else { continue };
            if rooms.len() == page.limit {
                // One more room the user may see: it starts the next page.
                return Ok((rooms, Some(page.token(walked))));
            }
            if depth < page.max_depth {
                // Reversed, so that the first child comes off the stack first.
                let children = children(&room, page.suggested_only);
                stack.extend(children.into_iter().rev().map(|(child, via)| (child, via, depth + 1)));
            }
            walked += 1;
            if walked > page.skip {
                rooms.push(room);
            }
        }
        Ok((rooms, None))
    }

    async fn room(&mut self, room_id: &OwnedRoomId, via: &[OwnedServerName]) -> Result<Option<Value>> {
        if let Some(known) = self.seen.get(room_id) {
            return Ok(known.clone());
        }
        let reader = Reader::User(self.user.user_id.clone());
        let room = match roomserver::space_room(&self.state.bus, room_id, reader).await? {
            Some((room, accessible)) => accessible.then_some(room),
            None => self.remote(room_id, via).await?,
        };
        self.seen.insert(room_id.clone(), room.clone());
        Ok(room)
    }

    /// A room this server does not have, asked of the servers its child
    /// event names; the children in that answer are kept for the walk.
    async fn remote(&mut self, room_id: &OwnedRoomId, via: &[OwnedServerName]) -> Result<Option<Value>> {
        if via.is_empty() {
            return Ok(None);
        }
        let request = FederationPerform::Hierarchy {
            room_id: room_id.clone(),
            servers: via.to_vec(),
            suggested_only: self.suggested_only,
        };
        let Ok(answer) = federation::remote(&self.state.bus, room_id.as_str(), request).await else {
            return Ok(None);
        };
        for id in answer["inaccessible_children"].as_array().into_iter().flatten() {
            if let Some(id) = id.as_str().and_then(|id| OwnedRoomId::try_from(id).ok()) {
                self.seen.entry(id).or_insert(None);
            }
        }
        for child in answer["children"].as_array().into_iter().flatten() {
            let Some(id) = child["room_id"].as_str().and_then(|id| OwnedRoomId::try_from(id).ok()) else { continue };
            // A child space's own children are not in the answer: it is asked on its own.
            let has_state = child["children_state"].is_array();
            if self.seen.contains_key(&id) || (!has_state && child["room_type"] == "m.space") {
                continue;
            }
            let mut shown = child.clone();
            if !has_state {
                shown["children_state"] = json!([]);
            }
            let shown = self.remote_accessible(child).await?.then_some(shown);
            self.seen.insert(id, shown);
        }
        let room = &answer["room"];
        if room["room_id"].as_str() != Some(room_id.as_str()) {
            return Ok(None);
        }
        Ok(self.remote_accessible(room).await?.then(|| room.clone()))
    }

    /// The other server shows this one what any of its users might see; the
    /// requester sees an open room, or a restricted one whose allowed rooms
    /// they are joined to (the spec leaves that filtering to us).
    async fn remote_accessible(&self, room: &Value) -> Result<bool> {
        let join_rule = room["join_rule"].as_str().unwrap_or("public");
        if room["world_readable"] == true || matches!(join_rule, "public" | "knock" | "knock_restricted") {
            return Ok(true);
        }
        if join_rule != "restricted" {
            return Ok(false);
        }
        let allowed = room["allowed_room_ids"].as_array().into_iter().flatten();
        for allowed in allowed.filter_map(Value::as_str).filter_map(|id| OwnedRoomId::try_from(id).ok()) {
            let membership = roomserver::membership(&self.state.bus, &allowed, &self.user.user_id).await?;
            if membership.is_some_and(|m| m.membership == "join") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A child of a space: its id and the servers to ask about it.
type Child = (OwnedRoomId, Vec<OwnedServerName>);

/// The room's children in the spec's order: those with a valid `order`
/// first, by it, then by the child event's timestamp, then by room id.
fn children(room: &Value, suggested_only: bool) -> Vec<Child> {
    let mut found: Vec<(Option<&str>, i64, Child)> = room["children_state"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|event| !suggested_only || event["content"]["suggested"] == true)
        .filter_map(|event| {
            let room_id = OwnedRoomId::try_from(event["state_key"].as_str()?).ok()?;
            let via = event["content"]["via"].as_array()?;
            let via: Vec<OwnedServerName> =
                via.iter().filter_map(Value::as_str).filter_map(|s| OwnedServerName::try_from(s).ok()).collect();
            let order = event["content"]["order"].as_str().filter(|order| valid_order(order));
            Some((order, event["origin_server_ts"].as_i64().unwrap_or(0), (room_id, via)))
        })
        .collect();
    // `None` sorts before `Some`: rooms with an order must come first.
    found.sort_by(|a, b| (a.0.is_none(), a.0, a.1, &a.2.0).cmp(&(b.0.is_none(), b.0, b.1, &b.2.0)));
    found.into_iter().map(|(_, _, child)| child).collect()
}

/// At most 50 printable ASCII characters, as the spec requires of `order`.
fn valid_order(order: &str) -> bool {
    order.len() <= MAX_ORDER_LEN && order.chars().all(|c| (' '..='~').contains(&c))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::children;

    #[test]
    fn children_are_ordered_by_order_then_timestamp_then_id() {
        let child = |id: &str, ts: i64, content: serde_json::Value| json!({"type": "m.space.child", "state_key": id, "origin_server_ts": ts, "content": content});
        let room = json!({"children_state": [
            child("!late:x", 5, json!({"via": ["x"]})),
            child("!early:x", 1, json!({"via": ["x"]})),
            child("!b:x", 9, json!({"via": ["x"], "order": "b"})),
            child("!a:x", 9, json!({"via": ["x"], "order": "a", "suggested": true})),
            child("!bad:x", 0, json!({"via": ["x"], "order": "\u{1}"})),
        ]});
        let ids: Vec<String> = children(&room, false).into_iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, ["!a:x", "!b:x", "!bad:x", "!early:x", "!late:x"]);
        let suggested: Vec<String> = children(&room, true).into_iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(suggested, ["!a:x"]);
    }
}
