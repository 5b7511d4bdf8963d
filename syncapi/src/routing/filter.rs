use axum::Json;
use axum::extract::{Path, Request, State};
use myelin_types::MatrixError;
use serde_json::{Value, json};

use super::AppState;
use crate::SyncApiError;
use crate::filter::Filter;

/// Filters are small; anything larger is refused before parsing.
const MAX_FILTER_BYTES: usize = 64 * 1024;

/// POST /_matrix/client/v3/user/{userId}/filter
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3useruseridfilter>
pub async fn create_filter(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, body) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    if identity.user_id.as_str() != user_id {
        return Err(MatrixError::forbidden("Cannot create filters for other users").into());
    }
    let bytes = axum::body::to_bytes(body, MAX_FILTER_BYTES)
        .await
        .map_err(|_| MatrixError::too_large("Filter body too large"))?;
    let value: Value = myelin_types::json::parse(&bytes)?;
    Filter::from_value(&value).map_err(|e| MatrixError::bad_json(format!("Invalid filter: {e}")))?;
    let filter_id = state.storage.insert_filter(&user_id, &value.to_string()).await?;
    Ok(Json(json!({ "filter_id": filter_id.to_string() })))
}

/// GET /_matrix/client/v3/user/{userId}/filter/{filterId}
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridfilterfilterid>
pub async fn get_filter(
    State(state): State<AppState>,
    Path((user_id, filter_id)): Path<(String, String)>,
    request: Request,
) -> Result<Json<Value>, SyncApiError> {
    let (parts, _) = request.into_parts();
    let identity = state.auth.authenticate(&parts).await?;
    if identity.user_id.as_str() != user_id {
        return Err(MatrixError::forbidden("Cannot read filters of other users").into());
    }
    let stored = match filter_id.parse::<i64>() {
        Ok(id) => state.storage.filter(&user_id, id).await?,
        Err(_) => None,
    };
    stored.map(Json).ok_or_else(|| MatrixError::not_found("No such filter").into())
}
