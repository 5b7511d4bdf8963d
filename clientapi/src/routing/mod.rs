//! HTTP handlers, one file per endpoint family. Client endpoints answer
//! under both `/_matrix/client/v3` and the legacy `/_matrix/client/r0`.

mod account;
mod account_data;
mod admin_register;
mod appservice;
mod backup;
mod capabilities;
mod devices;
pub(crate) mod directory;
mod hierarchy;
mod keys;
mod login;
pub mod media;
mod membership;
mod openid;
mod profile;
mod receipts;
mod refresh;
mod register;
mod registration_tokens;
mod reports;
mod rooms;
mod send;
mod state;
mod threepid;
mod timestamp;
mod to_device;
mod typing;
mod upgrade;
mod user_directory;
mod versions;
mod voip;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use myelin_types::ruma::{OwnedRoomId, OwnedUserId};
use myelin_types::{ErrorCode, MatrixError};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::producers::roomserver;
use crate::service::AppState;

pub fn router(state: AppState) -> Router {
    let client = Router::new()
        .route("/login", get(login::get_login).post(login::post_login))
        .route("/refresh", post(refresh::refresh))
        .route("/logout", post(login::logout))
        .route("/logout/all", post(login::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/account/password", post(account::change_password))
        .route("/account/deactivate", post(account::deactivate))
        .route("/account/3pid", get(threepid::list).post(threepid::add))
        .route("/account/3pid/add", post(threepid::add))
        .route("/account/3pid/bind", post(threepid::add))
        .route("/account/3pid/delete", post(threepid::remove))
        .route("/account/3pid/unbind", post(threepid::remove))
        .route("/account/3pid/email/requestToken", post(threepid::request_token))
        .route("/account/3pid/msisdn/requestToken", post(threepid::request_token))
        .route("/account/password/email/requestToken", post(threepid::request_token))
        .route("/account/password/msisdn/requestToken", post(threepid::request_token))
        .route("/register/email/requestToken", post(threepid::request_token))
        .route("/register/msisdn/requestToken", post(threepid::request_token))
        .route("/capabilities", get(capabilities::capabilities))
        .route("/devices", get(devices::list))
        .route("/devices/{device_id}", get(devices::get).put(devices::rename).delete(devices::delete))
        .route("/delete_devices", post(devices::delete_many))
        .route("/register", post(register::register))
        .route("/register/available", get(register::available))
        .route("/createRoom", post(rooms::create_room))
        .route("/joined_rooms", get(rooms::joined_rooms))
        .route(
            "/directory/room/{room_alias}",
            get(directory::get_alias).put(directory::put_alias).delete(directory::delete_alias),
        )
        .route("/directory/list/room/{room_id}", get(directory::get_visibility).put(directory::put_visibility))
        .route("/publicRooms", get(directory::get_public_rooms).post(directory::post_public_rooms))
        .route("/rooms/{room_id}/aliases", get(directory::room_aliases))
        .route("/rooms/{room_id}/join", post(membership::join_room))
        .route("/join/{room_id_or_alias}", post(membership::join_by_id_or_alias))
        .route("/knock/{room_id_or_alias}", post(membership::knock))
        .route("/rooms/{room_id}/leave", post(membership::leave))
        .route("/rooms/{room_id}/forget", post(membership::forget))
        .route("/rooms/{room_id}/upgrade", post(upgrade::upgrade))
        .route("/rooms/{room_id}/report", post(reports::report_room))
        .route("/rooms/{room_id}/report/{event_id}", post(reports::report_event))
        .route("/users/{user_id}/report", post(reports::report_user))
        .route("/rooms/{room_id}/invite", post(membership::invite))
        .route("/rooms/{room_id}/kick", post(membership::kick))
        .route("/rooms/{room_id}/ban", post(membership::ban))
        .route("/rooms/{room_id}/unban", post(membership::unban))
        .route("/rooms/{room_id}/send/{event_type}/{txn_id}", put(send::send_message))
        .route("/rooms/{room_id}/redact/{event_id}/{txn_id}", put(send::redact))
        .route("/rooms/{room_id}/state", get(state::get_state))
        .route("/rooms/{room_id}/state/{event_type}", get(state::get_state_empty_key).put(state::put_state_empty_key))
        .route("/rooms/{room_id}/state/{event_type}/", get(state::get_state_empty_key).put(state::put_state_empty_key))
        .route("/rooms/{room_id}/state/{event_type}/{state_key}", get(state::get_state_event).put(state::put_state))
        .route("/rooms/{room_id}/joined_members", get(state::joined_members))
        .route("/rooms/{room_id}/typing/{user_id}", put(typing::typing))
        .route("/sendToDevice/{event_type}/{txn_id}", put(to_device::send_to_device))
        .route("/user_directory/search", post(user_directory::search))
        .route("/keys/upload", post(keys::upload))
        .route("/keys/query", post(keys::query))
        .route("/keys/claim", post(keys::claim))
        .route("/keys/device_signing/upload", post(keys::upload_cross_signing))
        .route("/room_keys/version", get(backup::current_version).post(backup::create_version))
        .route(
            "/room_keys/version/{version}",
            get(backup::version).put(backup::update_version).delete(backup::delete_version),
        )
        .route("/room_keys/keys", get(backup::get_all).put(backup::put_all).delete(backup::delete_all))
        .route("/room_keys/keys/{room_id}", get(backup::get_room).put(backup::put_room).delete(backup::delete_room))
        .route(
            "/room_keys/keys/{room_id}/{session_id}",
            get(backup::get_session).put(backup::put_session).delete(backup::delete_session),
        )
        .route("/keys/signatures/upload", post(keys::upload_signatures))
        .route("/rooms/{room_id}/receipt/{receipt_type}/{event_id}", post(receipts::receipt))
        .route("/rooms/{room_id}/read_markers", post(receipts::read_markers))
        .route("/user/{user_id}/account_data/{data_type}", get(account_data::get_global).put(account_data::put_global))
        .route(
            "/user/{user_id}/rooms/{room_id}/account_data/{data_type}",
            get(account_data::get_room).put(account_data::put_room),
        )
        .route("/user/{user_id}/rooms/{room_id}/tags", get(account_data::get_tags))
        .route(
            "/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(account_data::put_tag).delete(account_data::delete_tag),
        )
        .route("/user/{user_id}/openid/request_token", post(openid::request_token))
        .route("/voip/turnServer", get(voip::turn_server))
        .route("/profile/{user_id}", get(profile::get_profile))
        .route(
            "/profile/{user_id}/{key_name}",
            get(profile::get_field).put(profile::put_field).delete(profile::delete_field),
        );
    Router::new()
        .route("/_matrix/client/versions", get(versions::versions))
        .route("/.well-known/matrix/client", get(versions::well_known_client))
        .route("/_synapse/admin/v1/register", get(admin_register::nonce).post(admin_register::register))
        .route("/_synapse/admin/v1/event_reports", get(reports::list_event_reports))
        .route(
            "/_synapse/admin/v1/event_reports/{report_id}",
            get(reports::get_event_report).delete(reports::delete_event_report),
        )
        .route("/_synapse/admin/v1/registration_tokens", get(registration_tokens::list))
        .route("/_synapse/admin/v1/registration_tokens/new", post(registration_tokens::create))
        .route(
            "/_synapse/admin/v1/registration_tokens/{token}",
            get(registration_tokens::get).put(registration_tokens::update).delete(registration_tokens::delete),
        )
        .route("/_matrix/client/v1/register/m.login.registration_token/validity", get(register::token_validity))
        .route("/_matrix/client/v1/login/get_token", post(login::get_token))
        .route("/_matrix/client/v1/appservice/{appservice_id}/ping", post(appservice::ping))
        .route("/_myelin/admin/v1/room_reports", get(reports::list_room_reports))
        .route("/_myelin/admin/v1/user_reports", get(reports::list_user_reports))
        .route("/_matrix/client/v1/rooms/{room_id}/timestamp_to_event", get(timestamp::timestamp_to_event))
        .route("/_matrix/client/v1/rooms/{room_id}/hierarchy", get(hierarchy::hierarchy))
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

/// A user id from a path segment or body: `400 M_INVALID_PARAM` if malformed.
pub(crate) fn parse_user_id(user_id: &str) -> Result<OwnedUserId, MatrixError> {
    OwnedUserId::try_from(user_id).map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))
}

/// `403 M_FORBIDDEN` unless the path names the requester: these endpoints
/// act only on the caller's own data.
pub(crate) fn require_self(user: &AuthedUser, target: &str, what: &str) -> Result<(), MatrixError> {
    if user.user_id.as_str() == target {
        Ok(())
    } else {
        Err(MatrixError::forbidden(format!("Cannot {what} for another user")))
    }
}

/// `403 M_FORBIDDEN` unless `user` is joined to the room now, as the room
/// server sees it (it refuses the question outright for non-members).
pub(crate) async fn require_joined(state: &AppState, room_id: &OwnedRoomId, user: &OwnedUserId) -> Result<()> {
    let events = roomserver::room_state(&state.bus, room_id, user, Some("m.room.member"), Some(user.as_str())).await?;
    let joined = events.iter().any(|e| {
        e.pdu["type"] == "m.room.member"
            && e.pdu["state_key"].as_str() == Some(user.as_str())
            && e.pdu["content"]["membership"] == "join"
    });
    if joined { Ok(()) } else { Err(MatrixError::forbidden("You are not joined to this room").into()) }
}
