//! GET /_matrix/client/v3/notifications
//! <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3notifications>

use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::extract::{Authed, MatrixQuery};
use crate::PusherError;

/// Notifications per page when the client does not say.
const DEFAULT_LIMIT: i64 = 20;
/// The most one page holds, whatever the client asks.
const MAX_LIMIT: i64 = 100;

#[derive(Deserialize)]
pub struct Params {
    from: Option<String>,
    limit: Option<String>,
    only: Option<String>,
}

pub async fn get_notifications(
    State(state): State<AppState>,
    Authed(caller): Authed,
    MatrixQuery(params): MatrixQuery<Params>,
) -> Result<Json<Value>, PusherError> {
    // `from` is the id of the last notification of the previous page.
    let before = match params.from.as_deref() {
        None | Some("") => i64::MAX,
        Some(from) => from
            .parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| MatrixError::invalid_param("from is not a token this server gave"))?,
    };
    let limit = match params.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(limit) => limit
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| MatrixError::invalid_param("limit must be a positive integer"))?
            .min(MAX_LIMIT),
    };
    let only_highlight = match params.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(other) => return Err(MatrixError::invalid_param(format!("Unknown only filter {other:?}")).into()),
    };
    let user_id = caller.identity.user_id.as_str();
    let rows = state.storage.notifications(user_id, before, limit, only_highlight).await?;
    let next_token = (rows.len() as i64 == limit).then(|| rows.last().map(|r| r.id.to_string())).flatten();
    let notifications: Vec<Value> = rows
        .into_iter()
        .map(|row| {
            json!({ "actions": row.actions, "event": row.event, "read": row.read, "room_id": row.room_id, "ts": row.ts })
        })
        .collect();
    let mut body = json!({ "notifications": notifications });
    if let Some(token) = next_token {
        body["next_token"] = Value::String(token);
    }
    Ok(Json(body))
}
