use axum::Json;
use serde_json::{Value, json};

/// GET /_matrix/federation/v1/version
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1version>
pub(super) async fn get_version() -> Json<Value> {
    Json(json!({"server": {"name": "Myelin", "version": env!("CARGO_PKG_VERSION")}}))
}
