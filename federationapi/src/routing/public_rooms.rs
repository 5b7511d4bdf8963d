//! GET and POST /_matrix/federation/v1/publicRooms
//! <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1publicrooms>
//!
//! This server's public room directory, listed to other servers only when
//! the operator allows it (`federation_api.allow_public_rooms_over_federation`);
//! the client API owns the directory and answers each page.

use axum::Json;
use axum::extract::{RawQuery, State};
use myelin_clientapi::api::{PUBLIC_ROOMS_TOPIC, PublicRoomsQuery, PublicRoomsReply};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::MatrixError;
use myelin_types::ruma::ServerName;
use serde::Deserialize;
use serde_json::Value;

use super::FederationState;
use super::auth::{Origin, Signed};

pub(super) async fn get_public_rooms(
    Origin(origin): Origin,
    State(state): State<FederationState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let (mut limit, mut since) = (None, None);
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match &*key {
            "limit" => {
                let parsed =
                    value.parse().map_err(|_| MatrixError::invalid_param(format!("Invalid limit: {value}")))?;
                limit = Some(parsed);
            }
            "since" => since = Some(value.into_owned()),
            _ => {}
        }
    }
    page(&state, &origin, PublicRoomsQuery { limit, since, search: None, room_types: None }).await
}

#[derive(Deserialize)]
pub(super) struct PublicRoomsBody {
    limit: Option<i64>,
    since: Option<String>,
    #[serde(default)]
    filter: Filter,
}

#[derive(Deserialize, Default)]
struct Filter {
    generic_search_term: Option<String>,
    room_types: Option<Vec<Option<String>>>,
}

pub(super) async fn post_public_rooms(
    State(state): State<FederationState>,
    Signed { origin, body }: Signed<PublicRoomsBody>,
) -> Result<Json<Value>, MatrixError> {
    let Filter { generic_search_term, room_types } = body.filter;
    let query = PublicRoomsQuery { limit: body.limit, since: body.since, search: generic_search_term, room_types };
    page(&state, &origin, query).await
}

async fn page(
    state: &FederationState,
    origin: &ServerName,
    query: PublicRoomsQuery,
) -> Result<Json<Value>, MatrixError> {
    if !state.allow_public_rooms {
        return Err(MatrixError::forbidden("This server does not list its public rooms over federation"));
    }
    let reply: PublicRoomsReply =
        state.bus.request_json(PUBLIC_ROOMS_TOPIC, origin.as_str(), &query, REQUEST_TIMEOUT).await.map_err(
            |error| {
                tracing::warn!(%error, "the client API did not answer a public rooms query");
                MatrixError::internal()
            },
        )?;
    reply.map(Json)
}
