//! User-interactive authentication for the endpoints that ask a logged-in
//! user for their password again (deleting devices, changing the password,
//! deactivating the account): one flow with the `m.login.password` stage.
//!
//! Spec: <https://spec.matrix.org/v1.16/client-server-api/#user-interactive-authentication-api>

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myelin_types::ruma::UserId;
use myelin_types::{ErrorCode, MatrixError, random};
use serde::Deserialize;
use serde_json::json;

use crate::accounts::{self, MAX_PASSWORD_LEN};
use crate::auth::AuthedUser;
use crate::error::Result;
use crate::service::AppState;
use crate::storage;

/// How long a user-interactive authentication session stays usable.
pub const SESSION_LIFETIME_MS: i64 = 30 * 60 * 1000;

/// The `auth` object of a request body.
#[derive(Debug, Deserialize)]
pub struct AuthData {
    #[serde(rename = "type")]
    kind: Option<String>,
    session: Option<String>,
    identifier: Option<Identifier>,
    /// Deprecated form of `identifier: {type: m.id.user, user}`.
    user: Option<String>,
    password: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Identifier {
    #[serde(rename = "type")]
    kind: String,
    user: Option<String>,
}

/// `401` with the flows: the client is asked to (re)try the password stage,
/// with `error` when its last attempt failed.
fn challenge(session: &str, error: Option<MatrixError>) -> Response {
    let mut body = json!({ "flows": [{ "stages": ["m.login.password"] }], "params": {}, "session": session });
    if let Some(error) = error {
        body["errcode"] = json!(error.errcode);
        body["error"] = json!(error.error);
    }
    (StatusCode::UNAUTHORIZED, Json(body)).into_response()
}

/// Check that the request proves `user` knows their password. `Some` is the
/// `401` response to return instead of acting; `None` means go ahead (and
/// the session is spent).
pub async fn require_password(state: &AppState, user: &AuthedUser, auth: Option<AuthData>) -> Result<Option<Response>> {
    let now = state.now_ms();
    let Some(auth) = auth else {
        let session = random::alphanumeric(24);
        storage::registration::create_uia_session(&state.db, &session, now, now - SESSION_LIFETIME_MS).await?;
        return Ok(Some(challenge(&session, None)));
    };
    let session = match auth.session {
        Some(session) => {
            let created = storage::registration::uia_session(&state.db, &session).await?;
            if created.is_none_or(|created| created < now - SESSION_LIFETIME_MS) {
                return Err(MatrixError::new(ErrorCode::Unknown, "Unknown or expired session")
                    .with_status(StatusCode::BAD_REQUEST)
                    .into());
            }
            session
        }
        // Clients that skip the first round trip still get a session to continue in.
        None => {
            let session = random::alphanumeric(24);
            storage::registration::create_uia_session(&state.db, &session, now, now - SESSION_LIFETIME_MS).await?;
            session
        }
    };
    match auth.kind.as_deref() {
        Some("m.login.password") => {}
        // Polling a session without completing a stage: challenge again.
        None => return Ok(Some(challenge(&session, None))),
        Some(_) => {
            let error = MatrixError::new(ErrorCode::Unknown, "Unsupported authentication type");
            return Ok(Some(challenge(&session, Some(error))));
        }
    }
    let failed = || Ok(Some(challenge(&session, Some(MatrixError::forbidden("Invalid password")))));
    let named = match (auth.identifier, auth.user) {
        (Some(Identifier { kind, user: Some(user) }), _) if kind == "m.id.user" => user,
        (None, Some(user)) => user,
        _ => return failed(),
    };
    // The stage proves the requester's own password, whoever it names.
    let names_requester = match named.strip_prefix('@') {
        Some(_) => <&UserId>::try_from(named.as_str()).is_ok_and(|named| named.as_str() == user.user_id.as_str()),
        None => named.to_lowercase() == user.user_id.localpart(),
    };
    let Some(password) = auth.password.filter(|p| p.len() <= MAX_PASSWORD_LEN) else {
        return failed();
    };
    let stored = storage::accounts::password_hash(&state.db, user.user_id.localpart()).await?.flatten();
    if !names_requester || !accounts::verify_password(password, stored).await? {
        return failed();
    }
    storage::registration::delete_uia_session(&state.db, &session).await?;
    Ok(None)
}
