use axum::Json;
use axum::extract::State;
use myelin_roomserver::api::ROOM_VERSIONS;
use serde_json::{Map, Value, json};

use crate::auth::AuthedUser;
use crate::service::AppState;

/// `GET /_matrix/client/v3/capabilities`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3capabilities>
///
/// Room versions are those the room server declares; third-party
/// identifiers are not supported, so they cannot be changed. Every profile
/// field may be set (`m.profile_fields` without an allow or deny list).
pub async fn capabilities(State(state): State<AppState>, _user: AuthedUser) -> Json<Value> {
    let available: Map<String, Value> =
        ROOM_VERSIONS.iter().map(|version| ((*version).to_owned(), Value::from("stable"))).collect();
    Json(json!({
        "capabilities": {
            "m.change_password": { "enabled": true },
            "m.room_versions": { "default": state.config.roomserver.default_room_version, "available": available },
            "m.set_displayname": { "enabled": true },
            "m.set_avatar_url": { "enabled": true },
            "m.profile_fields": { "enabled": true },
            "m.3pid_changes": { "enabled": false },
            "m.get_login_token": { "enabled": state.config.client_api.login_via_existing_session },
        }
    }))
}
