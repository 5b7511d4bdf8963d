use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use myelin_types::MatrixError;
use myelin_types::json::MatrixJson;
use myelin_types::ruma::CanonicalJsonObject;
use serde::Deserialize;
use serde_json::{Value, json};

use super::FederationState;

/// GET /_matrix/key/v2/server
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2server>
pub(super) async fn get_server_keys(
    State(state): State<FederationState>,
) -> Result<Json<CanonicalJsonObject>, MatrixError> {
    Ok(Json(state.keys.own_response()?))
}

#[derive(Debug, Deserialize)]
pub(super) struct QueryBody {
    server_keys: BTreeMap<String, BTreeMap<String, KeyCriteria>>,
}

#[derive(Debug, Default, Deserialize)]
struct KeyCriteria {
    minimum_valid_until_ts: Option<u64>,
}

/// POST /_matrix/key/v2/query
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixkeyv2query>
pub(super) async fn post_query(
    State(state): State<FederationState>,
    MatrixJson(body): MatrixJson<QueryBody>,
) -> Result<Json<Value>, MatrixError> {
    let mut responses = Vec::new();
    for (server, criteria) in body.server_keys {
        // The strictest criterion wins: one response must satisfy them all.
        let minimum = criteria.values().filter_map(|c| c.minimum_valid_until_ts).max();
        responses.extend(state.keys.notary_response(&server, minimum).await?);
    }
    Ok(Json(json!({ "server_keys": responses })))
}

#[derive(Debug, Deserialize)]
pub(super) struct QueryParams {
    minimum_valid_until_ts: Option<u64>,
}

/// GET /_matrix/key/v2/query/{serverName}
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2queryservername>
pub(super) async fn get_query(
    State(state): State<FederationState>,
    Path(server): Path<String>,
    params: Result<Query<QueryParams>, QueryRejection>,
) -> Result<Json<Value>, MatrixError> {
    let Query(params) = params.map_err(|e| MatrixError::invalid_param(e.body_text()))?;
    let responses: Vec<_> =
        state.keys.notary_response(&server, params.minimum_valid_until_ts).await?.into_iter().collect();
    Ok(Json(json!({ "server_keys": responses })))
}

/// GET /_matrix/key/v2/query/{serverName}/{keyId}
///
/// The deprecated form with a key id, still sent by older servers (and
/// SyTest); the answer is the same: every key the notary knows for the server.
pub(super) async fn get_query_key(
    state: State<FederationState>,
    Path((server, _key_id)): Path<(String, String)>,
    params: Result<Query<QueryParams>, QueryRejection>,
) -> Result<Json<Value>, MatrixError> {
    get_query(state, Path(server), params).await
}
