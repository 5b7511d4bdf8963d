//! Server-side search over the rooms the requester is joined to, through the
//! full-text index (`storage/search.rs`), with the same history visibility
//! as `/messages`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::Json;
use axum::extract::{Request, State};
use myelin_clientapi::api::Identity;
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::unsigned::{Viewer, client_events};
use super::{AppState, from_ignored, in_ranges, query_params, readable_ranges, visible_events};
use crate::SyncApiError;
use crate::filter::{self, RoomEventFilter};
use crate::storage::{EventRow, SEARCH_KEYS, SearchHit, SearchPage, SearchTerms, words_of};
use crate::token::StreamToken;

const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 100;
/// Candidates read per database round while filling a page.
const BATCH: i64 = 200;
/// More words than anyone types; bounds the cost of one query.
const MAX_WORDS: usize = 32;
/// Matches looked at for `count`, which beyond this is a lower bound.
const COUNT_CAP: i64 = 10_000;
const DEFAULT_CONTEXT: usize = 5;
const MAX_CONTEXT: usize = 20;
/// The prefix of a `next_batch` that continues a search ordered by rank.
const RANK_TOKEN: &str = "rank_";

#[derive(Deserialize)]
struct SearchBody {
    search_categories: Categories,
}

#[derive(Deserialize)]
struct Categories {
    room_events: Option<RoomEventsCriteria>,
}

#[derive(Deserialize)]
struct RoomEventsCriteria {
    search_term: String,
    keys: Option<Vec<String>>,
    filter: Option<RoomEventFilter>,
    order_by: Option<String>,
    event_context: Option<EventContext>,
    groupings: Option<Groupings>,
    #[serde(default)]
    include_state: bool,
}

#[derive(Deserialize)]
struct EventContext {
    before_limit: Option<usize>,
    after_limit: Option<usize>,
    #[serde(default)]
    include_profile: bool,
}

#[derive(Deserialize)]
struct Groupings {
    #[serde(default)]
    group_by: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    key: String,
}

/// What one request asks for, checked.
struct Query {
    words: Vec<String>,
    keys: Vec<&'static str>,
    page: SearchPage,
    limit: usize,
    group_by: Vec<GroupKey>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum GroupKey {
    RoomId,
    Sender,
}

impl GroupKey {
    fn name(self) -> &'static str {
        match self {
            Self::RoomId => "room_id",
            Self::Sender => "sender",
        }
    }
}

/// POST /_matrix/client/v3/search
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3search>
///
/// Every word of `search_term` must begin a word in one of the searched
/// keys, ignoring letter case. `rank` (the default) orders by how well an
/// event matched, `recent` newest first. Messages from ignored users are
/// left out, as in timelines. `count` counts the matches the
/// requester may see, up to the first 10,000 matches.
pub async fn search(State(state): State<AppState>, request: Request) -> Result<Json<Value>, SyncApiError> {
    let (parts, body) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    let body: SearchBody = super::json_body(body).await?;
    let Some(criteria) = body.search_categories.room_events else {
        return Ok(Json(json!({ "search_categories": {} })));
    };
    let query = checked(&criteria, query_params(&parts).get("next_batch").map(String::as_str))?;
    let filter = criteria.filter.as_ref();
    let terms = SearchTerms { words: &query.words, keys: &query.keys };

    let current = state.notifier.current().events;
    let user_id = identity.user_id.as_str();
    let ignored = state.storage.ignored_users(user_id).await?;
    let mut readable = Readable::default();
    let mut hits = Vec::new();
    let mut page = query.page;
    let mut exhausted = false;
    while hits.len() < query.limit && !exhausted {
        let batch = state.storage.search(user_id, &terms, page_below(page, current), BATCH).await?;
        exhausted = (batch.len() as i64) < BATCH;
        for hit in batch {
            page = next_page(page, &hit);
            let visible = readable.contains(&state, &identity, &hit.room_id, hit.row.pos, current).await?;
            if visible && !from_ignored(&ignored, &hit.row) && filter::passes(filter, &hit.room_id, &hit.row.pdu) {
                hits.push(hit);
                if hits.len() == query.limit {
                    break;
                }
            }
        }
    }

    let mut results = Vec::with_capacity(hits.len());
    for hit in &hits {
        let viewer = readable.viewer(&identity, &hit.room_id);
        let mut served = client_events(&state, &viewer, std::slice::from_ref(&hit.row)).await?;
        let mut result = json!({ "rank": hit.rank, "result": served.pop().unwrap_or_default() });
        if let Some(wanted) = &criteria.event_context {
            result["context"] = context(&state, &viewer, hit, wanted, filter, current).await?;
        }
        results.push(result);
    }
    let mut room_events = json!({
        "count": visible_count(&state, &identity, &terms, filter, &ignored, &mut readable, current).await?,
        "results": results,
        "highlights": query.words,
    });
    if !query.group_by.is_empty() {
        room_events["groups"] = groups(&hits, &query.group_by);
    }
    if criteria.include_state {
        room_events["state"] = current_state(&state, &readable, &identity, &hits, current).await?;
    }
    if !exhausted || hits.len() == query.limit {
        room_events["next_batch"] = Value::String(token_of(page));
    }
    Ok(Json(json!({ "search_categories": { "room_events": room_events } })))
}

/// The request's criteria and page token, or the spec's error for them.
fn checked(criteria: &RoomEventsCriteria, next_batch: Option<&str>) -> Result<Query, MatrixError> {
    let rank = match criteria.order_by.as_deref() {
        None | Some("rank") => true,
        Some("recent") => false,
        Some(_) => return Err(MatrixError::invalid_param("order_by must be recent or rank")),
    };
    let words = words_of(&criteria.search_term);
    if words.is_empty() {
        return Err(MatrixError::invalid_param("search_term must contain a word"));
    }
    if words.len() > MAX_WORDS {
        return Err(MatrixError::invalid_param(format!("search_term may hold at most {MAX_WORDS} words")));
    }
    let keys = searched_keys(criteria.keys.as_deref())?;
    let page = page_of(next_batch, rank).ok_or_else(|| MatrixError::invalid_param("Invalid next_batch"))?;
    let limit =
        criteria.filter.as_ref().and_then(|f| f.limit).map_or(DEFAULT_LIMIT, |l| (l as usize).clamp(1, MAX_LIMIT));
    let group_by = match &criteria.groupings {
        None => Vec::new(),
        Some(groupings) => groupings
            .group_by
            .iter()
            .map(|group| match group.key.as_str() {
                "room_id" => Ok(GroupKey::RoomId),
                "sender" => Ok(GroupKey::Sender),
                other => Err(MatrixError::invalid_param(format!("Cannot group by {other}"))),
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Query { words, keys, page, limit, group_by })
}

/// The searched keys; all by default.
fn searched_keys(keys: Option<&[String]>) -> Result<Vec<&'static str>, MatrixError> {
    let Some(keys) = keys else { return Ok(SEARCH_KEYS.iter().map(|(key, _, _)| *key).collect()) };
    keys.iter()
        .map(|key| {
            SEARCH_KEYS
                .iter()
                .find(|(name, _, _)| name == key)
                .map(|(name, _, _)| *name)
                .ok_or_else(|| MatrixError::invalid_param(format!("Cannot search {key}")))
        })
        .collect()
}

/// The page a `next_batch` continues; `None` for a token of another order
/// or no token at all of ours.
fn page_of(next_batch: Option<&str>, rank: bool) -> Option<SearchPage> {
    match (next_batch, rank) {
        (None, true) => Some(SearchPage::Rank { offset: 0 }),
        (None, false) => Some(SearchPage::Recent { before: i64::MAX }),
        (Some(token), true) => {
            let offset: i64 = token.strip_prefix(RANK_TOKEN)?.parse().ok()?;
            (offset >= 0).then_some(SearchPage::Rank { offset })
        }
        (Some(token), false) => token.parse().ok().map(|before| SearchPage::Recent { before }),
    }
}

fn token_of(page: SearchPage) -> String {
    match page {
        SearchPage::Recent { before } => before.to_string(),
        SearchPage::Rank { offset } => format!("{RANK_TOKEN}{offset}"),
    }
}

/// Events after `current` are not served yet, whatever the token says.
fn page_below(page: SearchPage, current: i64) -> SearchPage {
    match page {
        SearchPage::Recent { before } => SearchPage::Recent { before: before.min(current + 1) },
        rank => rank,
    }
}

/// The page that starts after `hit`.
fn next_page(page: SearchPage, hit: &SearchHit) -> SearchPage {
    match page {
        SearchPage::Recent { .. } => SearchPage::Recent { before: hit.row.pos },
        SearchPage::Rank { offset } => SearchPage::Rank { offset: offset + 1 },
    }
}

/// The readable ranges of each room met so far (see [`readable_ranges`]).
#[derive(Default)]
struct Readable {
    rooms: HashMap<String, Vec<(i64, i64)>>,
}

impl Readable {
    async fn ranges(
        &mut self,
        state: &AppState,
        identity: &Identity,
        room_id: &str,
        current: i64,
    ) -> Result<&[(i64, i64)], SyncApiError> {
        if !self.rooms.contains_key(room_id) {
            let ranges = match readable_ranges(state, identity, room_id, current).await {
                Ok(ranges) => ranges,
                Err(SyncApiError::Matrix(_)) => Vec::new(),
                Err(other) => return Err(other),
            };
            self.rooms.insert(room_id.to_owned(), ranges);
        }
        Ok(&self.rooms[room_id])
    }

    async fn contains(
        &mut self,
        state: &AppState,
        identity: &Identity,
        room_id: &str,
        pos: i64,
        current: i64,
    ) -> Result<bool, SyncApiError> {
        Ok(pos <= current && in_ranges(self.ranges(state, identity, room_id, current).await?, pos))
    }

    /// For a room [`Self::contains`] has already loaded.
    fn viewer<'a>(&'a self, identity: &'a Identity, room_id: &'a str) -> Viewer<'a> {
        let ranges = self.rooms.get(room_id).map_or(&[][..], Vec::as_slice);
        Viewer { identity, room_id, ranges, with_room_id: true }
    }
}

/// How many matches the requester may see that the filter keeps, leaving
/// out ignored users' messages, as the results do.
async fn visible_count(
    state: &AppState,
    identity: &Identity,
    terms: &SearchTerms<'_>,
    filter: Option<&RoomEventFilter>,
    ignored: &BTreeSet<String>,
    readable: &mut Readable,
    current: i64,
) -> Result<usize, SyncApiError> {
    let with_pdu = filter.is_some_and(|f| f.contains_url.is_some());
    let matches = state.storage.search_positions(identity.user_id.as_str(), terms, COUNT_CAP, with_pdu).await?;
    let mut count = 0;
    for found in matches {
        let sender = found.event.get("sender").and_then(Value::as_str).unwrap_or_default();
        let from_ignored = !found.is_state && ignored.contains(sender);
        if from_ignored || !filter::passes(filter, &found.room_id, &found.event) {
            continue;
        }
        if readable.contains(state, identity, &found.room_id, found.pos, current).await? {
            count += 1;
        }
    }
    Ok(count)
}

/// `context` of one result: the visible events around it that pass the
/// filter, and optionally its sender's profile as it was then.
async fn context(
    state: &AppState,
    viewer: &Viewer<'_>,
    hit: &SearchHit,
    wanted: &EventContext,
    filter: Option<&RoomEventFilter>,
    current: i64,
) -> Result<Value, SyncApiError> {
    let limit = |asked: Option<usize>| asked.unwrap_or(DEFAULT_CONTEXT).min(MAX_CONTEXT);
    let keep = |row: &EventRow| filter::passes(filter, &hit.room_id, &row.pdu);
    let (room_id, ranges, pos) = (hit.room_id.as_str(), viewer.ranges, hit.row.pos);
    let (before, _) =
        visible_events(&state.storage, room_id, ranges, 0, pos - 1, true, limit(wanted.before_limit), keep).await?;
    let (after, _) =
        visible_events(&state.storage, room_id, ranges, pos, current, false, limit(wanted.after_limit), keep).await?;
    let mut context = json!({
        "start": StreamToken(before.last().map_or(pos - 1, |e| e.pos - 1)).to_string(),
        "end": StreamToken(after.last().map_or(pos, |e| e.pos)).to_string(),
        "events_before": client_events(state, viewer, &before).await?,
        "events_after": client_events(state, viewer, &after).await?,
    });
    if wanted.include_profile {
        context["profile_info"] = profiles(state, room_id, &hit.row, &before, &after).await?;
    }
    Ok(context)
}

/// Each sender's display name and avatar from their membership at the
/// result, as clients show it beside the result.
async fn profiles(
    state: &AppState,
    room_id: &str,
    result: &EventRow,
    before: &[EventRow],
    after: &[EventRow],
) -> Result<Value, SyncApiError> {
    let senders: BTreeSet<&str> =
        before.iter().chain([result]).chain(after).filter_map(|row| row.pdu["sender"].as_str()).collect();
    let mut profiles = Map::new();
    for sender in senders {
        let member = state.storage.state_event_at(room_id, "m.room.member", sender, result.pos).await?;
        let content = member.map(|row| row.pdu["content"].clone()).unwrap_or_default();
        let mut profile = Map::new();
        for field in ["displayname", "avatar_url"] {
            if let Some(value) = content.get(field).filter(|v| v.is_string()) {
                profile.insert(field.to_owned(), value.clone());
            }
        }
        profiles.insert(sender.to_owned(), Value::Object(profile));
    }
    Ok(Value::Object(profiles))
}

/// `groups`: for each key asked for, the page's results by that key's
/// value, each group ordered by where its first result came.
fn groups(hits: &[SearchHit], group_by: &[GroupKey]) -> Value {
    let mut out = Map::new();
    for key in group_by {
        let mut by_value: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
        for hit in hits {
            let value = match key {
                GroupKey::RoomId => hit.room_id.as_str(),
                GroupKey::Sender => hit.row.pdu["sender"].as_str().unwrap_or_default(),
            };
            let order = by_value.len();
            by_value.entry(value).or_insert((order, Vec::new())).1.push(hit.row.event_id.as_str());
        }
        let grouped: Map<String, Value> = by_value
            .into_iter()
            .map(|(value, (order, results))| (value.to_owned(), json!({ "order": order, "results": results })))
            .collect();
        out.insert(key.name().to_owned(), Value::Object(grouped));
    }
    Value::Object(out)
}

/// `state`: the current state of each room with a result (the requester is
/// joined to every such room, so it is theirs to see).
async fn current_state(
    state: &AppState,
    readable: &Readable,
    identity: &Identity,
    hits: &[SearchHit],
    current: i64,
) -> Result<Value, SyncApiError> {
    let rooms: BTreeSet<&str> = hits.iter().map(|hit| hit.room_id.as_str()).collect();
    let mut out = Map::new();
    for room_id in rooms {
        let rows = state.storage.state_at(room_id, current).await?;
        let viewer = readable.viewer(identity, room_id);
        out.insert(room_id.to_owned(), Value::Array(client_events(state, &viewer, &rows).await?));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_continue_only_their_own_order() {
        for page in [SearchPage::Rank { offset: 30 }, SearchPage::Recent { before: 12 }] {
            let rank = matches!(page, SearchPage::Rank { .. });
            assert_eq!(page_of(Some(token_of(page).as_str()), rank), Some(page));
            assert_eq!(page_of(Some(token_of(page).as_str()), !rank), None);
        }
        assert_eq!(page_of(Some("rank_-1"), true), None);
        assert_eq!(page_of(Some("abc"), false), None);
    }

    #[test]
    fn keys_must_be_searchable_ones() {
        assert_eq!(searched_keys(Some(&["content.name".to_owned()])).unwrap(), ["content.name"]);
        assert_eq!(searched_keys(None).unwrap().len(), 3);
        assert!(searched_keys(Some(&["content.nope".to_owned()])).is_err());
    }
}
