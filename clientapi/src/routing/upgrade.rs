//! Room upgrades. The room server builds the replacement room and changes
//! the old one (`InputRequest::UpgradeRoom`); the local aliases and the
//! public directory entry, which live here, follow once it has.

use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::UpgradeRoom;
use myelin_types::ruma::OwnedUserId;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::producers::roomserver;
use crate::routing::parse_room_id;
use crate::routing::profile::{add_to_member_content, profile_of};
use crate::service::AppState;
use crate::storage;

#[derive(Deserialize)]
pub struct UpgradeBody {
    new_version: String,
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

/// `POST /_matrix/client/v3/rooms/{roomId}/upgrade`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidupgrade>
///
/// An unknown room is `404 M_NOT_FOUND` (as Synapse answers); a requester
/// who may not send `m.room.tombstone` in it, members or not, `403 M_FORBIDDEN`.
pub async fn upgrade(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(room_id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<UpgradeBody>,
) -> Result<Json<Value>> {
    let room_id = parse_room_id(&room_id)?;
    let mut requester_profile = Map::new();
    add_to_member_content(&profile_of(&state, &user.user_id).await?, &mut requester_profile);
    let request = UpgradeRoom {
        room_id: room_id.clone(),
        requester: user.user_id.clone(),
        requester_profile,
        new_version: body.new_version,
        additional_creators: body.additional_creators,
    };
    let replacement = roomserver::upgrade_room(&state.bus, request).await?;
    // The upgrade stands even if this fails; the aliases then still name the old room.
    storage::directory::move_to_replacement(&state.db, room_id.as_str(), replacement.as_str()).await?;
    Ok(Json(json!({ "replacement_room": replacement })))
}
