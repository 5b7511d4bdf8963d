//! Requests to the federation API over the bus: joins and knocks through
//! other servers and their aliases (`federationapi.perform`), other
//! servers' users' keys (`federationapi.keys`), files
//! (`federationapi.media`) and profiles (`federationapi.profiles`).

use std::time::Duration;

use myelin_bus::Bus;
use myelin_roomserver::api::{
    FEDERATION_PERFORM_TOPIC, FederationPerform, FederationPerformOk, FederationPerformReply, PERFORM_TIMEOUT,
};
use myelin_types::ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName, OwnedUserId};
use serde_json::Value;

use crate::api::{
    PublicProfile, REMOTE_KEYS_TOPIC, REMOTE_MEDIA_TOPIC, REMOTE_PROFILE_TOPIC, RemoteKeysReply, RemoteKeysRequest,
    RemoteMedia, RemoteMediaReply, RemoteMediaRequest, RemoteProfileQuery, RemoteProfileReply,
};
use crate::error::{ClientApiError, Result};

/// One request on `federationapi.perform`, keyed by `key`.
async fn perform(bus: &Bus, key: &str, request: FederationPerform) -> Result<FederationPerformOk> {
    let reply: FederationPerformReply =
        bus.request_json(FEDERATION_PERFORM_TOPIC, key, &request, PERFORM_TIMEOUT).await?;
    Ok(reply?)
}

/// Join a room this server is not in through `servers`; the room server
/// has the room once this returns.
pub async fn join_room(
    bus: &Bus,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    servers: Vec<OwnedServerName>,
    content: Value,
) -> Result<OwnedRoomId> {
    let key = room_id.to_string();
    match perform(bus, &key, FederationPerform::JoinRoom { room_id, user_id, servers, content }).await? {
        FederationPerformOk::Joined { room_id, .. } => Ok(room_id),
        FederationPerformOk::Alias { .. }
        | FederationPerformOk::Knocked { .. }
        | FederationPerformOk::Remote { .. } => Err(ClientApiError::UnexpectedReply("federationapi.perform")),
    }
}

/// The room an alias of another server names, and servers to join it through.
pub async fn resolve_alias(bus: &Bus, alias: OwnedRoomAliasId) -> Result<(OwnedRoomId, Vec<OwnedServerName>)> {
    let key = alias.to_string();
    match perform(bus, &key, FederationPerform::ResolveAlias { alias }).await? {
        FederationPerformOk::Alias { room_id, servers } => Ok((room_id, servers)),
        FederationPerformOk::Joined { .. }
        | FederationPerformOk::Knocked { .. }
        | FederationPerformOk::Remote { .. } => Err(ClientApiError::UnexpectedReply("federationapi.perform")),
    }
}

/// Knock on a room this server is not in through `servers`.
pub async fn knock_room(
    bus: &Bus,
    room_id: OwnedRoomId,
    user_id: OwnedUserId,
    servers: Vec<OwnedServerName>,
    content: Value,
) -> Result<OwnedRoomId> {
    let key = room_id.to_string();
    match perform(bus, &key, FederationPerform::KnockRoom { room_id, user_id, servers, content }).await? {
        FederationPerformOk::Knocked { room_id, .. } => Ok(room_id),
        FederationPerformOk::Alias { .. } | FederationPerformOk::Joined { .. } | FederationPerformOk::Remote { .. } => {
            Err(ClientApiError::UnexpectedReply("federationapi.perform"))
        }
    }
}

/// Another server's answer to a request the federation API makes for us
/// (`/hierarchy`, `/publicRooms`).
pub async fn remote(bus: &Bus, key: &str, request: FederationPerform) -> Result<Value> {
    match perform(bus, key, request).await? {
        FederationPerformOk::Remote { response } => Ok(response),
        FederationPerformOk::Joined { .. }
        | FederationPerformOk::Alias { .. }
        | FederationPerformOk::Knocked { .. } => Err(ClientApiError::UnexpectedReply("federationapi.perform")),
    }
}

/// Ask another server about its users' keys (`/user/keys/query` or
/// `/user/keys/claim`, as `request` says), waiting at most `timeout`.
/// `Err` says why there is no answer, for the client's `failures`.
pub async fn remote_keys(
    bus: &Bus,
    request: &RemoteKeysRequest,
    server_name: &str,
    timeout: Duration,
) -> Result<Value, String> {
    // A little longer than the federation API's own deadline, so that its
    // answer (even a failure) wins over our timeout.
    let wait = timeout + Duration::from_secs(1);
    match bus.request_json::<_, RemoteKeysReply>(REMOTE_KEYS_TOPIC, server_name, request, wait).await {
        Ok(reply) => reply,
        Err(error) => Err(error.to_string()),
    }
}

/// Longer than the federation client's own deadline for one request and
/// its fallback, so that its answer (even a failure) wins over our timeout.
const REMOTE_MEDIA_TIMEOUT: Duration = Duration::from_secs(130);

/// Fetch another server's file into the media store as `request.file_id`.
pub async fn remote_media(bus: &Bus, request: &RemoteMediaRequest) -> Result<RemoteMedia> {
    let reply: RemoteMediaReply =
        bus.request_json(REMOTE_MEDIA_TOPIC, request.server_name.as_str(), request, REMOTE_MEDIA_TIMEOUT).await?;
    Ok(reply?)
}

/// Another server's user's profile.
pub async fn remote_profile(bus: &Bus, user_id: OwnedUserId) -> Result<PublicProfile> {
    let key = user_id.to_string();
    let reply: RemoteProfileReply =
        bus.request_json(REMOTE_PROFILE_TOPIC, &key, &RemoteProfileQuery { user_id }, PERFORM_TIMEOUT).await?;
    Ok(reply?)
}
