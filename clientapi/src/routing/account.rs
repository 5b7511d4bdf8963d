use axum::Json;
use serde_json::{Value, json};

use crate::auth::AuthedUser;

/// `GET /_matrix/client/v3/account/whoami`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3accountwhoami>
pub async fn whoami(user: AuthedUser) -> Json<Value> {
    Json(json!({ "user_id": user.user_id, "device_id": user.device_id, "is_guest": false }))
}
