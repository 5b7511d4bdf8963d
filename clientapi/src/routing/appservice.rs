//! Endpoints only application services call.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myelin_types::{ErrorCode, MatrixError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::json::{MatrixJson, MatrixPath};
use crate::service::AppState;

/// How long the homeserver waits for the application service's answer.
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an application service's error body passed back.
const MAX_ERROR_BODY: usize = 4096;

#[derive(Deserialize)]
pub struct PingBody {
    transaction_id: Option<String>,
}

/// `POST /_matrix/client/v1/appservice/{appserviceId}/ping`
/// <https://spec.matrix.org/v1.16/application-service-api/#post_matrixclientv1appserviceappserviceidping>
///
/// Only the service itself (its `as_token`) may ping it. The homeserver
/// calls the service's `/_matrix/app/v1/ping` with its `hs_token` and says
/// how long that took, or why it failed (`502 M_BAD_STATUS` with the
/// service's status and body, `502 M_CONNECTION_FAILED`,
/// `504 M_CONNECTION_TIMEOUT`).
pub async fn ping(
    State(state): State<AppState>,
    user: AuthedUser,
    MatrixPath(id): MatrixPath<String>,
    MatrixJson(body): MatrixJson<PingBody>,
) -> Result<Response> {
    let service = state
        .app_services
        .of_caller(&user)
        .filter(|service| service.id() == id)
        .ok_or_else(|| MatrixError::forbidden("Only the application service itself may ping it"))?;
    let Some(url) = &service.registration.url else {
        return Err(MatrixError::new(ErrorCode::UrlNotSet, "The application service has no URL").into());
    };
    let mut request = json!({});
    if let Some(transaction_id) = body.transaction_id {
        request["transaction_id"] = json!(transaction_id);
    }
    let started = Instant::now();
    let sent = state
        .app_services
        .http()
        .post(format!("{}/_matrix/app/v1/ping", url.trim_end_matches('/')))
        .bearer_auth(&service.registration.hs_token)
        .json(&request)
        .timeout(PING_TIMEOUT)
        .send()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(error) if error.is_timeout() => {
            return Err(MatrixError::new(ErrorCode::ConnectionTimeout, "The application service did not answer").into());
        }
        Err(error) => {
            tracing::info!(id, error = %error, "application service ping failed");
            return Err(
                MatrixError::new(ErrorCode::ConnectionFailed, "The application service could not be reached").into()
            );
        }
    };
    let status = response.status();
    if status.is_success() {
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        return Ok(Json(json!({ "duration_ms": duration_ms })).into_response());
    }
    let text = response.text().await.unwrap_or_default();
    let body: String = text.chars().take(MAX_ERROR_BODY).collect();
    Ok(bad_status(status.as_u16(), body))
}

/// `M_BAD_STATUS` carries the service's own status and body, which no
/// other error does, so it is built here rather than as a [`MatrixError`].
fn bad_status(status: u16, body: String) -> Response {
    let error: Value = json!({
        "errcode": "M_BAD_STATUS",
        "error": "The application service answered with an error",
        "status": status,
        "body": body,
    });
    (StatusCode::BAD_GATEWAY, Json(error)).into_response()
}
