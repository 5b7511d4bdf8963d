//! The user directory: finding users to invite.

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::MatrixJson;
use crate::service::AppState;
use crate::storage::directory;

const DEFAULT_LIMIT: u64 = 10;
const MAX_LIMIT: u64 = 100;

#[derive(Deserialize)]
pub struct SearchBody {
    search_term: String,
    limit: Option<u64>,
}

/// `POST /_matrix/client/v3/user_directory/search`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3user_directorysearch>
///
/// Only users who share a room with the requester or are in a public room
/// are found, never every account of the server.
pub async fn search(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixJson(body): MatrixJson<SearchBody>,
) -> Result<Json<Value>> {
    let term = body.search_term.trim();
    if term.is_empty() {
        return Err(MatrixError::invalid_param("search_term must not be empty").into());
    }
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT) as i64;
    let mut found =
        directory::search_users(&state.db, user.user_id.as_str(), state.server_name(), term, limit + 1).await?;
    let limited = found.len() as i64 > limit;
    found.truncate(limit as usize);
    let results: Vec<Value> = found
        .into_iter()
        .map(|(user_id, display_name, avatar_url)| {
            let mut entry = json!({ "user_id": user_id });
            if let Some(name) = display_name {
                entry["display_name"] = Value::String(name);
            }
            if let Some(url) = avatar_url {
                entry["avatar_url"] = Value::String(url);
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "results": results, "limited": limited })))
}
