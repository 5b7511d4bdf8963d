//! HTTP handlers, one file per endpoint family. Client endpoints answer
//! under both `/_matrix/client/v3` and the legacy `/_matrix/client/r0`.

mod account;
mod admin_register;
mod login;
mod membership;
mod register;
mod rooms;
mod send;
mod state;
mod versions;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use myelin_types::ruma::OwnedRoomId;
use myelin_types::{ErrorCode, MatrixError};

use crate::service::AppState;

pub fn router(state: AppState) -> Router {
    let client = Router::new()
        .route("/login", get(login::get_login).post(login::post_login))
        .route("/logout", post(login::logout))
        .route("/logout/all", post(login::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/register", post(register::register))
        .route("/register/available", get(register::available))
        .route("/createRoom", post(rooms::create_room))
        .route("/joined_rooms", get(rooms::joined_rooms))
        .route("/rooms/{room_id}/join", post(membership::join_room))
        .route("/join/{room_id_or_alias}", post(membership::join_by_id_or_alias))
        .route("/rooms/{room_id}/leave", post(membership::leave))
        .route("/rooms/{room_id}/invite", post(membership::invite))
        .route("/rooms/{room_id}/kick", post(membership::kick))
        .route("/rooms/{room_id}/ban", post(membership::ban))
        .route("/rooms/{room_id}/unban", post(membership::unban))
        .route("/rooms/{room_id}/send/{event_type}/{txn_id}", put(send::send_message))
        .route("/rooms/{room_id}/state", get(state::get_state))
        .route("/rooms/{room_id}/state/{event_type}", get(state::get_state_empty_key).put(state::put_state_empty_key))
        .route("/rooms/{room_id}/state/{event_type}/", get(state::get_state_empty_key).put(state::put_state_empty_key))
        .route("/rooms/{room_id}/state/{event_type}/{state_key}", get(state::get_state_event).put(state::put_state))
        .route("/rooms/{room_id}/members", get(state::members));
    Router::new()
        .route("/_matrix/client/versions", get(versions::versions))
        .route("/_synapse/admin/v1/register", get(admin_register::nonce).post(admin_register::register))
        .nest("/_matrix/client/v3", client.clone())
        .nest("/_matrix/client/r0", client)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// A known path with the wrong method: `405 M_UNRECOGNIZED`, as the spec asks.
async fn method_not_allowed() -> MatrixError {
    MatrixError::new(ErrorCode::Unrecognized, "Unrecognized request").with_status(StatusCode::METHOD_NOT_ALLOWED)
}

/// A room id from a path segment: `400 M_INVALID_PARAM` if malformed.
pub(crate) fn parse_room_id(room_id: &str) -> Result<OwnedRoomId, MatrixError> {
    OwnedRoomId::try_from(room_id).map_err(|_| MatrixError::invalid_param(format!("Invalid room id: {room_id}")))
}
