//! TURN credentials for VoIP calls.

use axum::Json;
use axum::extract::State;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use myelin_types::MatrixError;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::auth::AuthedUser;
use crate::error::Result;
use crate::service::AppState;

/// `GET /_matrix/client/v3/voip/turnServer`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3voipturnserver>
///
/// Credentials as TURN servers check them with a shared secret (coturn's
/// `use-auth-secret`): the username is `expiry:user_id`, the password the
/// base64 HMAC-SHA1 of the username under the secret. Without TURN servers
/// and a secret configured there are none: `404 M_NOT_FOUND`.
pub async fn turn_server(State(state): State<AppState>, user: AuthedUser) -> Result<Json<Value>> {
    let config = &state.config.client_api;
    let Some(secret) = config.turn_shared_secret.as_deref().filter(|_| !config.turn_uris.is_empty()) else {
        return Err(MatrixError::not_found("This server has no TURN server configured").into());
    };
    let ttl = config.turn_user_lifetime_secs;
    let expiry = u64::try_from(state.now_ms()).unwrap_or_default() / 1000 + ttl;
    let username = format!("{expiry}:{}", user.user_id);
    Ok(Json(json!({
        "username": username,
        "password": turn_password(secret, &username),
        "uris": config.turn_uris,
        "ttl": ttl,
    })))
}

fn turn_password(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `base64(hmac_sha1(secret, username))` (RFC 2104 with
    /// padded base64), as a TURN server with a shared secret computes it.
    #[test]
    fn the_password_is_the_base64_hmac_sha1_of_the_username() {
        assert_eq!(turn_password("north", "1700000000:@alice:example.org"), "b7c/MWmorxmLryRFjaJYkUW5nOo=");
    }
}
