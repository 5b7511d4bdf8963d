//! Reading events and state of this server's rooms: `/event`, `/state`,
//! `/state_ids`, `/event_auth`, `/backfill`, `/get_missing_events` and
//! `/timestamp_to_event`. The
//! room server answers each with only what the origin may see.
//!
//! Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-events>

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use myelin_roomserver::api::{QueryOk, QueryRequest, Reader, ServerRead, StoredEvent};
use myelin_types::ruma::{OwnedEventId, OwnedServerName};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Origin, Signed};
use super::{FederationState, check_acl, parse_room_id, query_room_server, unexpected};

/// `limit` of `/get_missing_events` when the body has none, as the spec says.
const DEFAULT_MISSING_LIMIT: u32 = 10;

/// GET /_matrix/federation/v1/event/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1eventeventid>
pub(super) async fn get_event(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(event_id): Path<String>,
) -> Result<Json<Value>, MatrixError> {
    let event_id = parse_event_id(&event_id)?;
    let key = event_id.to_string();
    let (events, _) = read(&state, &key, origin, ServerRead::Event { event_id }).await?;
    Ok(Json(transaction(&state, events)))
}

/// GET /_matrix/federation/v1/state/{roomId}?event_id=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1stateroomid>
pub(super) async fn get_state(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let (pdus, auth_chain) = state_at(&state, origin, &room_id, query).await?;
    Ok(Json(json!({ "pdus": pdus_of(pdus), "auth_chain": pdus_of(auth_chain) })))
}

/// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1state_idsroomid>
pub(super) async fn get_state_ids(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let (pdus, auth_chain) = state_at(&state, origin, &room_id, query).await?;
    Ok(Json(json!({ "pdu_ids": ids_of(&pdus), "auth_chain_ids": ids_of(&auth_chain) })))
}

/// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1event_authroomideventid>
pub(super) async fn get_event_auth(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path((room_id, event_id)): Path<(String, String)>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    let event_id = parse_event_id(&event_id)?;
    let key = room_id.to_string();
    let (events, _) = read(&state, &key, origin, ServerRead::AuthChain { room_id, event_id }).await?;
    Ok(Json(json!({ "auth_chain": pdus_of(events) })))
}

/// GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1backfillroomid>
pub(super) async fn get_backfill(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    let mut from = Vec::new();
    let mut limit = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "v" => from.push(parse_event_id(&value)?),
            "limit" => {
                limit = Some(value.parse::<u32>().map_err(|_| MatrixError::invalid_param("limit is not an integer"))?)
            }
            _ => {}
        }
    }
    if from.is_empty() {
        return Err(missing_param("v"));
    }
    let limit = limit.ok_or_else(|| missing_param("limit"))?;
    let key = room_id.to_string();
    let (events, _) = read(&state, &key, origin, ServerRead::Backfill { room_id, from, limit }).await?;
    Ok(Json(transaction(&state, events)))
}

/// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=…&dir=f|b
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1timestamp_to_eventroomid>
///
/// The nearest event the origin may see; `404 M_NOT_FOUND` when none.
pub(super) async fn get_timestamp_to_event(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    let (mut ts, mut forward) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "ts" => ts = Some(value.parse::<i64>().map_err(|_| MatrixError::invalid_param("ts is not an integer"))?),
            "dir" => {
                forward = Some(match value.as_ref() {
                    "f" => true,
                    "b" => false,
                    _ => return Err(MatrixError::invalid_param("dir must be f or b")),
                })
            }
            _ => {}
        }
    }
    let ts = ts.ok_or_else(|| missing_param("ts"))?;
    let forward = forward.ok_or_else(|| missing_param("dir"))?;
    check_acl(&state, &origin, &room_id).await?;
    let key = room_id.to_string();
    let request = QueryRequest::TimestampToEvent { room_id, ts, forward, reader: Reader::Server(origin) };
    match query_room_server(&state, &key, &request).await? {
        QueryOk::EventAt { event_id, origin_server_ts } => {
            Ok(Json(json!({ "event_id": event_id, "origin_server_ts": origin_server_ts })))
        }
        other => Err(unexpected(other)),
    }
}

/// The body of `/get_missing_events`.
#[derive(Deserialize)]
pub(super) struct MissingEventsBody {
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    min_depth: Option<i64>,
}

/// POST /_matrix/federation/v1/get_missing_events/{roomId}
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1get_missing_eventsroomid>
pub(super) async fn post_get_missing_events(
    State(state): State<FederationState>,
    Path(room_id): Path<String>,
    Signed { origin, body }: Signed<MissingEventsBody>,
) -> Result<Json<Value>, MatrixError> {
    let room_id = parse_room_id(&room_id)?;
    let key = room_id.to_string();
    let read_request = ServerRead::Missing {
        room_id,
        earliest: body.earliest_events,
        latest: body.latest_events,
        limit: body.limit.unwrap_or(DEFAULT_MISSING_LIMIT),
        min_depth: body.min_depth.unwrap_or(0),
    };
    let (events, _) = read(&state, &key, origin, read_request).await?;
    Ok(Json(json!({ "events": pdus_of(events) })))
}

/// `/state` and `/state_ids`: the state before `event_id` and its auth chain.
async fn state_at(
    state: &FederationState,
    origin: OwnedServerName,
    room_id: &str,
    query: Option<String>,
) -> Result<(Vec<StoredEvent>, Vec<StoredEvent>), MatrixError> {
    let room_id = parse_room_id(room_id)?;
    let event_id = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(name, _)| name == "event_id")
        .map(|(_, value)| value.into_owned())
        .ok_or_else(|| missing_param("event_id"))?;
    let event_id = parse_event_id(&event_id)?;
    let key = room_id.to_string();
    read(state, &key, origin, ServerRead::State { room_id, event_id }).await
}

async fn read(
    state: &FederationState,
    key: &str,
    server: OwnedServerName,
    read: ServerRead,
) -> Result<(Vec<StoredEvent>, Vec<StoredEvent>), MatrixError> {
    // `/event` names no room: its event's room is checked once it is known.
    let room_id = match &read {
        ServerRead::Event { .. } => None,
        ServerRead::State { room_id, .. }
        | ServerRead::AuthChain { room_id, .. }
        | ServerRead::Backfill { room_id, .. }
        | ServerRead::Missing { room_id, .. } => Some(room_id.clone()),
    };
    if let Some(room_id) = &room_id {
        check_acl(state, &server, room_id).await?;
    }
    let (events, auth_chain) =
        match query_room_server(state, key, &QueryRequest::ServerRead { server: server.clone(), read }).await? {
            QueryOk::ServerEvents { events, auth_chain } => (events, auth_chain),
            other => return Err(unexpected(other)),
        };
    if room_id.is_none() {
        for event in &events {
            check_acl(state, &server, &event.room_id).await?;
        }
    }
    Ok((events, auth_chain))
}

/// The `Transaction` shape `/event` and `/backfill` answer with.
fn transaction(state: &FederationState, events: Vec<StoredEvent>) -> Value {
    json!({
        "origin": state.keys.server_name(),
        "origin_server_ts": state.clock.now_ms(),
        "pdus": pdus_of(events),
    })
}

fn pdus_of(events: Vec<StoredEvent>) -> Vec<Value> {
    events.into_iter().map(|event| event.pdu).collect()
}

fn ids_of(events: &[StoredEvent]) -> Vec<&str> {
    events.iter().map(|event| event.event_id.as_str()).collect()
}

fn parse_event_id(event_id: &str) -> Result<OwnedEventId, MatrixError> {
    OwnedEventId::try_from(event_id).map_err(|_| MatrixError::invalid_param(format!("Invalid event id: {event_id}")))
}

fn missing_param(name: &str) -> MatrixError {
    MatrixError::new(ErrorCode::MissingParam, format!("{name} is required"))
}
