//! Room aliases (local ones, in the client API's own table) and the public
//! room directory, whose room summaries come from the client API's read
//! model of `roomserver.output` (`consumers/roomserver_output.rs`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use myelin_roomserver::api::FederationPerform;
use myelin_storage::Db;
use myelin_types::ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName, RoomAliasId};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath, MatrixQuery, OptionalJson};
use crate::power::may_send_state;
use crate::producers::{federation, roomserver};
use crate::routing::{parse_room_id, require_joined};
use crate::service::AppState;
use crate::storage::directory::{self, DirectoryFilter, Summary};

/// Rooms per page when the client does not say, and at most.
const DEFAULT_LIMIT: i64 = 100;
const MAX_LIMIT: i64 = 500;

/// A syntactically valid alias of this server: `400 M_INVALID_PARAM` otherwise
/// (other servers' aliases can only be read, in [`get_alias`]).
pub(crate) fn local_alias(state: &AppState, alias: &str) -> Result<String, MatrixError> {
    let parsed = <&RoomAliasId>::try_from(alias)
        .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias: {alias}")))?;
    if parsed.server_name().as_str() != state.server_name() {
        return Err(MatrixError::invalid_param(format!("Room alias {alias} is not on this server")));
    }
    Ok(parsed.to_string())
}

/// The room a local alias names: `404 M_NOT_FOUND` if none, once the
/// application services whose namespace holds it had the chance to create it.
pub(crate) async fn resolve(state: &AppState, alias: &str) -> Result<OwnedRoomId> {
    let alias = local_alias(state, alias)?;
    let mut found = directory::alias(&state.db, &alias).await?;
    if found.is_none() && state.app_services.query_alias(&alias).await {
        found = directory::alias(&state.db, &alias).await?;
    }
    let (room_id, _) = found.ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    Ok(parse_room_id(&room_id)?)
}

fn alias_in_use(alias: &str) -> MatrixError {
    MatrixError::new(ErrorCode::RoomInUse, format!("Room alias {alias} already exists"))
}

#[derive(Deserialize)]
pub struct AliasBody {
    room_id: String,
}

/// `PUT /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3directoryroomroomalias>
///
/// Only members of the room may point an alias at it, so that nobody claims
/// names for rooms they cannot even see.
pub async fn put_alias(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(alias): MatrixPath<String>,
    MatrixJson(body): MatrixJson<AliasBody>,
) -> Result<Json<Value>> {
    let alias = local_alias(&state, &alias)?;
    state.app_services.check_alias_free(&alias, state.app_services.of_caller(&user))?;
    let room_id = parse_room_id(&body.room_id)?;
    require_joined(&state, &room_id, &user.user_id).await?;
    if !directory::create_alias(&state.db, &alias, room_id.as_str(), user.user_id.as_str(), state.now_ms()).await? {
        return Err(alias_in_use(&alias).with_status(StatusCode::CONFLICT).into());
    }
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3directoryroomroomalias>
///
/// Another server's alias is asked of that server (through the federation API).
pub async fn get_alias(State(state): State<AppState>, MatrixPath(alias): MatrixPath<String>) -> Result<Json<Value>> {
    let parsed = OwnedRoomAliasId::try_from(alias.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid room alias: {alias}")))?;
    if parsed.server_name().as_str() != state.server_name() {
        let (room_id, servers) = federation::resolve_alias(&state.bus, parsed).await?;
        return Ok(Json(json!({ "room_id": room_id, "servers": servers })));
    }
    let room_id = resolve(&state, &alias).await?;
    Ok(Json(json!({ "room_id": room_id, "servers": [state.server_name()] })))
}

/// `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3directoryroomroomalias>
///
/// By the alias's creator, by a member with the power to change the
/// room's canonical alias, or by the application service whose namespace
/// holds it; an exclusive namespace's aliases only by its service.
pub async fn delete_alias(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(alias): MatrixPath<String>,
) -> Result<Json<Value>> {
    let alias = local_alias(&state, &alias)?;
    let service = state.app_services.of_caller(&user);
    state.app_services.check_alias_free(&alias, service)?;
    let (room_id, creator) = directory::alias(&state.db, &alias)
        .await?
        .ok_or_else(|| MatrixError::not_found(format!("Room alias {alias} not found")))?;
    if creator != user.user_id.as_str() && service.is_none() {
        let room_id = parse_room_id(&room_id)?;
        require_joined(&state, &room_id, &user.user_id).await?;
        let room_state = roomserver::room_state(&state.bus, &room_id, &user.user_id, None, None).await?;
        if !may_send_state(&room_state, &user.user_id, "m.room.canonical_alias") {
            return Err(MatrixError::forbidden("You may not delete this alias").into());
        }
    }
    directory::delete_alias(&state.db, &alias).await?;
    Ok(Json(json!({})))
}

/// `GET /_matrix/client/v3/rooms/{roomId}/aliases`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3roomsroomidaliases>
pub async fn room_aliases(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    require_joined(&state, &room_id, &user.user_id).await?;
    Ok(Json(json!({ "aliases": directory::aliases_of(&state.db, room_id.as_str()).await? })))
}

/// `GET /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3directorylistroomroomid>
pub async fn get_visibility(
    State(state): State<AppState>,
    MatrixPath(room_id): MatrixPath<String>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let published = directory::is_published(&state.db, room_id.as_str()).await?;
    if !published && !directory::room_known(&state.db, room_id.as_str()).await? {
        return Err(MatrixError::not_found("Room not found").into());
    }
    Ok(Json(json!({ "visibility": if published { "public" } else { "private" } })))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<String>,
}

/// `PUT /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3directorylistroomroomid>
///
/// Like changing the canonical alias, publishing needs a member with the
/// power to send `m.room.canonical_alias` (as Synapse does).
pub async fn put_visibility(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<VisibilityBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let published = match body.visibility.as_deref() {
        Some("public") => true,
        None | Some("private") => false,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown visibility: {other}")).into()),
    };
    require_joined(&state, &room_id, &user.user_id).await?;
    let room_state = roomserver::room_state(&state.bus, &room_id, &user.user_id, None, None).await?;
    if !may_send_state(&room_state, &user.user_id, "m.room.canonical_alias") {
        return Err(MatrixError::forbidden("You may not change this room's directory visibility").into());
    }
    directory::set_published(&state.db, room_id.as_str(), published).await?;
    Ok(Json(json!({})))
}

/// A page of the directory: `since` tokens are `o<offset>`, opaque to clients.
pub(crate) struct Page {
    limit: i64,
    offset: i64,
    filter: DirectoryFilter,
}

/// Most room types one directory request may name.
const MAX_ROOM_TYPES: usize = 50;

impl Page {
    /// `400 M_INVALID_PARAM` for a `since` token that is not ours or too
    /// many room types.
    pub(crate) fn new(limit: Option<i64>, since: Option<&str>, filter: DirectoryFilter) -> Result<Self, MatrixError> {
        if filter.room_types.as_ref().is_some_and(|types| types.len() > MAX_ROOM_TYPES) {
            return Err(MatrixError::invalid_param(format!("At most {MAX_ROOM_TYPES} room types may be asked for")));
        }
        Ok(Self { limit: limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT), offset: parse_since(since)?, filter })
    }
}

fn parse_since(since: Option<&str>) -> Result<i64, MatrixError> {
    match since {
        None => Ok(0),
        Some(token) => token
            .strip_prefix('o')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| MatrixError::invalid_param(format!("Invalid since token: {token}"))),
    }
}

fn chunk_entry(summary: &Summary) -> Value {
    let mut entry = Map::new();
    entry.insert("room_id".to_owned(), json!(summary.room_id));
    entry.insert("num_joined_members".to_owned(), json!(summary.joined_members));
    entry.insert("world_readable".to_owned(), json!(summary.history_visibility.as_deref() == Some("world_readable")));
    entry.insert("guest_can_join".to_owned(), json!(summary.guest_access.as_deref() == Some("can_join")));
    entry.insert("join_rule".to_owned(), json!(summary.join_rule.as_deref().unwrap_or("invite")));
    for (key, value) in [
        ("name", &summary.name),
        ("topic", &summary.topic),
        ("canonical_alias", &summary.canonical_alias),
        ("avatar_url", &summary.avatar_url),
        ("room_type", &summary.room_type),
    ] {
        if let Some(value) = value {
            entry.insert(key.to_owned(), json!(value));
        }
    }
    Value::Object(entry)
}

/// One page of this server's directory, for its clients and other servers.
pub(crate) async fn page_of(db: &Db, page: Page) -> Result<Value> {
    let (rooms, total) = directory::published(db, &page.filter, page.offset, page.limit).await?;
    let mut body = json!({
        "chunk": rooms.iter().map(chunk_entry).collect::<Vec<_>>(),
        "total_room_count_estimate": total,
    });
    let next = page.offset + page.limit;
    if next < total {
        body["next_batch"] = json!(format!("o{next}"));
    }
    if page.offset > 0 {
        body["prev_batch"] = json!(format!("o{}", (page.offset - page.limit).max(0)));
    }
    Ok(body)
}

/// The other server whose directory the client asks for, if it names one
/// (`400 M_INVALID_PARAM` for a malformed name).
fn other_server(state: &AppState, server: Option<&str>) -> Result<Option<OwnedServerName>, MatrixError> {
    match server {
        Some(server) if server != state.server_name() => OwnedServerName::try_from(server)
            .map(Some)
            .map_err(|_| MatrixError::invalid_param(format!("Invalid server name: {server}"))),
        _ => Ok(None),
    }
}

/// Another server's directory, asked over federation (it may refuse).
async fn remote_page(
    state: &AppState,
    server: OwnedServerName,
    limit: Option<i64>,
    since: Option<String>,
    filter: Option<Value>,
) -> Result<Json<Value>> {
    let key = server.to_string();
    let request = FederationPerform::PublicRooms { server, limit, since, filter };
    Ok(Json(federation::remote(&state.bus, &key, request).await?))
}

#[derive(Deserialize)]
pub struct PublicRoomsQuery {
    limit: Option<i64>,
    since: Option<String>,
    server: Option<String>,
}

/// `GET /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3publicrooms>
///
/// Needs an access token unless `client_api.public_room_directory_without_auth`
/// (DESIGN.md invariant 11: private by default).
pub async fn get_public_rooms(
    State(state): State<AppState>,
    user: Option<AuthedUser>,
    MatrixQuery(query): MatrixQuery<PublicRoomsQuery>,
) -> Result<Json<Value>> {
    if user.is_none() && !state.config.client_api.public_room_directory_without_auth {
        return Err(MatrixError::missing_token().into());
    }
    if let Some(server) = other_server(&state, query.server.as_deref())? {
        return remote_page(&state, server, query.limit, query.since, None).await;
    }
    let page = Page::new(query.limit, query.since.as_deref(), DirectoryFilter::default())?;
    Ok(Json(page_of(&state.db, page).await?))
}

#[derive(Deserialize, Default)]
pub struct PublicRoomsBody {
    limit: Option<i64>,
    since: Option<String>,
    #[serde(default)]
    filter: PublicRoomsFilter,
    third_party_instance_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct PublicRoomsFilter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

#[derive(Deserialize)]
pub struct ServerQuery {
    server: Option<String>,
}

/// `POST /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3publicrooms>
///
/// The search matches the name, topic and canonical alias, ignoring case;
/// `room_types` keeps rooms of the listed types (`null`: without a type).
/// This server bridges no third-party networks, so `include_all_networks`
/// changes nothing and a `third_party_instance_id` lists no room.
pub async fn post_public_rooms(
    State(state): State<AppState>,
    _user: AuthedUser,
    MatrixQuery(query): MatrixQuery<ServerQuery>,
    OptionalJson(body): OptionalJson<PublicRoomsBody>,
) -> Result<Json<Value>> {
    let PublicRoomsFilter { generic_search_term, room_types } = body.filter;
    if let Some(server) = other_server(&state, query.server.as_deref())? {
        let mut filter = Map::new();
        if let Some(term) = generic_search_term {
            filter.insert("generic_search_term".to_owned(), json!(term));
        }
        if let Some(types) = room_types {
            filter.insert("room_types".to_owned(), json!(types));
        }
        let filter = (!filter.is_empty()).then_some(Value::Object(filter));
        return remote_page(&state, server, body.limit, body.since, filter).await;
    }
    let page =
        Page::new(body.limit, body.since.as_deref(), DirectoryFilter { search: generic_search_term, room_types })?;
    if body.third_party_instance_id.is_some() {
        return Ok(Json(json!({ "chunk": [], "total_room_count_estimate": 0 })));
    }
    Ok(Json(page_of(&state.db, page).await?))
}
