//! `/query/profile`: the public profile of one of this server's users,
//! asked of the client API, which owns accounts (`clientapi.profiles`).

use axum::Json;
use axum::extract::{RawQuery, State};
use myelin_clientapi::api::{PROFILE_QUERY_TOPIC, ProfileQuery, ProfileReply};
use myelin_roomserver::api::REQUEST_TIMEOUT;
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError};
use serde_json::Value;

use super::FederationState;
use super::auth::Origin;

/// GET /_matrix/federation/v1/query/profile?user_id=…&field=…
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1queryprofile>
pub(super) async fn query_profile(
    Origin(_origin): Origin,
    State(state): State<FederationState>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, MatrixError> {
    let mut user_id = None;
    let mut field = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "user_id" => user_id = Some(value.into_owned()),
            "field" => field = Some(value.into_owned()),
            _ => {}
        }
    }
    let user_id = user_id.ok_or_else(|| MatrixError::new(ErrorCode::MissingParam, "user_id is required"))?;
    let user_id = OwnedUserId::try_from(user_id.as_str())
        .map_err(|_| MatrixError::invalid_param(format!("Invalid user id: {user_id}")))?;
    if user_id.server_name().as_str() != state.keys.server_name() {
        return Err(MatrixError::invalid_param(format!("{user_id} is not a user of this server")));
    }
    let request = ProfileQuery { user_id: user_id.clone() };
    let reply: ProfileReply =
        state.bus.request_json(PROFILE_QUERY_TOPIC, user_id.as_str(), &request, REQUEST_TIMEOUT).await.map_err(
            |error| {
                tracing::warn!(%error, "the client API did not answer a profile query");
                MatrixError::internal()
            },
        )?;
    let profile = reply.ok_or_else(|| MatrixError::not_found(format!("No such user {user_id}")))?;
    let mut fields = profile.fields;
    for (name, value) in [("displayname", profile.displayname), ("avatar_url", profile.avatar_url)] {
        if let Some(value) = value {
            fields.insert(name.to_owned(), Value::String(value));
        }
    }
    if let Some(wanted) = field.as_deref() {
        fields.retain(|name, _| name == wanted);
    }
    if field.is_some() && fields.is_empty() {
        return Err(MatrixError::not_found("The user has no such profile field"));
    }
    Ok(Json(Value::Object(fields)))
}
