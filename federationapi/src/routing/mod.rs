//! HTTP handlers of the federation listener, one file per endpoint family.

pub mod auth;
mod directory;
mod edus;
mod events;
mod hierarchy;
mod invite;
mod join;
mod keys;
mod knock;
mod leave;
mod media;
mod openid;
mod profile;
mod public_rooms;
mod send;
mod user_keys;
mod version;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use myelin_bus::Bus;
use myelin_clientapi::api::MediaStore;
use myelin_roomserver::api::{QUERY_TOPIC, QueryOk, QueryReply, QueryRequest, REQUEST_TIMEOUT};
use myelin_storage::Db;
use myelin_types::MatrixError;
use myelin_types::body::read_body_first;
use myelin_types::clock::SharedClock;
use myelin_types::ruma::signatures::reference_hash;
use myelin_types::ruma::{CanonicalJsonValue, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, ServerName};
use serde_json::Value;

use crate::keys::KeyStore;
use crate::sender::Sender;

/// What the handlers need.
#[derive(Clone)]
pub struct FederationState {
    pub keys: Arc<KeyStore>,
    pub db: Db,
    pub bus: Bus,
    pub clock: SharedClock,
    /// Passes on the membership events other servers hand this one (`/send_join`, …).
    pub sender: Sender,
    /// The media store shared with the client API (uploads served to other servers).
    pub media: Arc<MediaStore>,
    /// `federation_api.allow_public_rooms_over_federation`.
    pub allow_public_rooms: bool,
    /// One lock per origin server, so its transactions are handled one at a time.
    transactions: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl FederationState {
    pub fn new(
        keys: Arc<KeyStore>,
        db: Db,
        bus: Bus,
        clock: SharedClock,
        sender: Sender,
        media: Arc<MediaStore>,
    ) -> Self {
        Self { keys, db, bus, clock, sender, media, allow_public_rooms: false, transactions: Arc::default() }
    }

    fn transaction_gate(&self, origin: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.transactions.lock().expect("transaction gate lock").entry(origin.to_owned()).or_default().clone()
    }
}

/// The federation router. Unknown paths and wrong methods answer with
/// `M_UNRECOGNIZED` JSON, as the spec asks of every Matrix endpoint.
/// Largest request body: a full transaction (50 PDUs of at most 64 KiB,
/// 100 EDUs) with room to spare.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(state: FederationState) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version::get_version))
        .route("/_matrix/federation/v1/send/{txn_id}", put(send::put_send))
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(join::make_join))
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", put(join::send_join_v1))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(join::send_join_v2))
        .route("/_matrix/federation/v1/make_leave/{room_id}/{user_id}", get(leave::make_leave))
        .route("/_matrix/federation/v1/send_leave/{room_id}/{event_id}", put(leave::send_leave_v1))
        .route("/_matrix/federation/v2/send_leave/{room_id}/{event_id}", put(leave::send_leave_v2))
        .route("/_matrix/federation/v1/make_knock/{room_id}/{user_id}", get(knock::make_knock))
        .route("/_matrix/federation/v1/send_knock/{room_id}/{event_id}", put(knock::send_knock))
        .route("/_matrix/federation/v1/query/directory", get(directory::query_directory))
        .route("/_matrix/federation/v1/query/profile", get(profile::query_profile))
        .route("/_matrix/federation/v1/media/download/{media_id}", get(media::download))
        .route("/_matrix/federation/v1/media/thumbnail/{media_id}", get(media::thumbnail_of))
        .route("/_matrix/federation/v1/hierarchy/{room_id}", get(hierarchy::get_hierarchy))
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(public_rooms::get_public_rooms).post(public_rooms::post_public_rooms),
        )
        .route("/_matrix/federation/v1/openid/userinfo", get(openid::userinfo))
        .route("/_matrix/federation/v1/invite/{room_id}/{event_id}", put(invite::invite_v1))
        .route("/_matrix/federation/v2/invite/{room_id}/{event_id}", put(invite::invite_v2))
        .route("/_matrix/federation/v1/event/{event_id}", get(events::get_event))
        .route("/_matrix/federation/v1/state/{room_id}", get(events::get_state))
        .route("/_matrix/federation/v1/state_ids/{room_id}", get(events::get_state_ids))
        .route("/_matrix/federation/v1/event_auth/{room_id}/{event_id}", get(events::get_event_auth))
        .route("/_matrix/federation/v1/backfill/{room_id}", get(events::get_backfill))
        .route("/_matrix/federation/v1/timestamp_to_event/{room_id}", get(events::get_timestamp_to_event))
        .route("/_matrix/federation/v1/get_missing_events/{room_id}", post(events::post_get_missing_events))
        .route("/_matrix/federation/v1/user/devices/{user_id}", get(user_keys::get_user_devices))
        .route("/_matrix/federation/v1/user/keys/query", post(user_keys::post_keys_query))
        .route("/_matrix/federation/v1/user/keys/claim", post(user_keys::post_keys_claim))
        .route("/_matrix/key/v2/server", get(keys::get_server_keys))
        // Deprecated form with a key id, still requested by older servers;
        // the answer is the same (all current keys).
        .route("/_matrix/key/v2/server/{key_id}", get(keys::get_server_keys))
        .route("/_matrix/key/v2/query", post(keys::post_query))
        .route("/_matrix/key/v2/query/{server_name}", get(keys::get_query))
        .route("/_matrix/key/v2/query/{server_name}/{key_id}", get(keys::get_query_key))
        .method_not_allowed_fallback(|| async {
            MatrixError::unrecognized().with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .fallback(|| async { MatrixError::unrecognized() })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(BODY_LIMIT, read_body_first))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(myelin_observe::metrics_layer())
}

pub(super) fn parse_room_id(room_id: &str) -> Result<OwnedRoomId, MatrixError> {
    OwnedRoomId::try_from(room_id).map_err(|_| MatrixError::invalid_param(format!("Invalid room id: {room_id}")))
}

/// Ask the room server; `key` is the room id (the event id when no room is named).
pub(super) async fn query_room_server(
    state: &FederationState,
    key: &str,
    request: &QueryRequest,
) -> Result<QueryOk, MatrixError> {
    let reply: QueryReply =
        state.bus.request_json(QUERY_TOPIC, key, request, REQUEST_TIMEOUT).await.map_err(bus_error)?;
    reply
}

/// Refuse `origin` with `403 M_FORBIDDEN` when the server ACL of `room_id`
/// denies it: every room-scoped federation request passes here first.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#server-access-control-lists-acls>
pub(super) async fn check_acl(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
) -> Result<(), MatrixError> {
    if server_allowed(state, origin, room_id).await? {
        Ok(())
    } else {
        Err(MatrixError::forbidden(format!("{origin} is denied by the server ACL of {room_id}")))
    }
}

/// Whether the room's current server ACL lets `origin` take part (the room
/// server reads it from the current state).
pub(super) async fn server_allowed(
    state: &FederationState,
    origin: &ServerName,
    room_id: &RoomId,
) -> Result<bool, MatrixError> {
    let request = QueryRequest::ServerAllowed { room_id: room_id.to_owned(), server: origin.to_owned() };
    match query_room_server(state, room_id.as_str(), &request).await? {
        QueryOk::ServerAllowed { allowed } => Ok(allowed),
        other => Err(unexpected(other)),
    }
}

pub(super) fn bus_error(error: myelin_bus::BusError) -> MatrixError {
    tracing::warn!(%error, "the room server did not answer");
    MatrixError::internal()
}

pub(super) fn unexpected(other: QueryOk) -> MatrixError {
    tracing::error!(?other, "the room server answered with another kind");
    MatrixError::internal()
}

/// The id of `event` as its room version computes it: carried in rooms v1
/// and v2, the reference hash from v3 on.
pub(super) fn event_id_of(event: &Value, room_version: &str) -> Result<OwnedEventId, MatrixError> {
    let rules = RoomVersionId::try_from(room_version).ok().and_then(|version| version.rules()).ok_or_else(|| {
        tracing::error!(%room_version, "the room server stores a room version without rules");
        MatrixError::internal()
    })?;
    let invalid = || MatrixError::bad_json("The event has no valid event id");
    if rules.event_format.require_event_id {
        return event
            .get("event_id")
            .and_then(Value::as_str)
            .and_then(|id| OwnedEventId::try_from(id).ok())
            .ok_or_else(invalid);
    }
    let Ok(CanonicalJsonValue::Object(object)) = CanonicalJsonValue::try_from(event.clone()) else {
        return Err(MatrixError::bad_json("The event is not a canonical JSON object"));
    };
    let hash = reference_hash(&object, &rules).map_err(|_| invalid())?;
    OwnedEventId::try_from(format!("${hash}")).map_err(|_| invalid())
}
