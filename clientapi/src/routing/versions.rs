use axum::Json;
use serde_json::{Value, json};

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
