use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use serde_json::{Value, json};

use crate::error::Result;
use crate::service::AppState;

/// Spec versions this server speaks.
const VERSIONS: &[&str] = &[
    "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12",
    "v1.13", "v1.14", "v1.15", "v1.16",
];

/// `GET /_matrix/client/versions`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientversions>
pub async fn versions() -> Json<Value> {
    // Simplified sliding sync (MSC4186), served by the sync API.
    Json(json!({ "versions": VERSIONS, "unstable_features": { "org.matrix.simplified_msc3575": true } }))
}

/// `GET /.well-known/matrix/client`
/// <https://spec.matrix.org/v1.16/client-server-api/#getwell-knownmatrixclient>
///
/// Served when the operator set `client_api.public_base_url`; otherwise
/// there is nothing to announce and clients use the URL they were given.
pub async fn well_known_client(State(state): State<AppState>) -> Result<Json<Value>> {
    let Some(base_url) = state.config.client_api.public_base_url.as_deref() else {
        return Err(MatrixError::not_found("No client discovery information is configured").into());
    };
    Ok(Json(json!({ "m.homeserver": { "base_url": base_url } })))
}
