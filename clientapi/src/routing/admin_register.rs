//! Synapse's shared-secret registration, which operators and test harnesses
//! use to create accounts (`register_new_matrix_user`, SyTest, Complement):
//! <https://element-hq.github.io/synapse/latest/admin_api/register_api.html>

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use hmac::{Hmac, KeyInit, Mac};
use myelin_types::{ErrorCode, MatrixError, random};
use serde::Deserialize;
use serde_json::{Value, json};
use sha1::Sha1;

use crate::accounts::{self, MAX_PASSWORD_LEN, Registration};
use crate::error::Result;
use crate::json::MatrixJson;
use crate::service::AppState;
use crate::storage;

/// How long a nonce stays valid, as in Synapse.
const NONCE_LIFETIME_MS: i64 = 60 * 1000;

fn secret(state: &AppState) -> Result<&str, MatrixError> {
    state.config.client_api.registration_shared_secret.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| {
        MatrixError::new(ErrorCode::Unrecognized, "Shared secret registration is not enabled")
            .with_status(StatusCode::BAD_REQUEST)
    })
}

fn bad_request(error: &str) -> MatrixError {
    MatrixError::new(ErrorCode::Unknown, error).with_status(StatusCode::BAD_REQUEST)
}

/// `GET /_synapse/admin/v1/register`: a fresh single-use nonce.
pub async fn nonce(State(state): State<AppState>) -> Result<Json<Value>> {
    secret(&state)?;
    let nonce = random::alphanumeric(32);
    let now = state.now_ms();
    storage::registration::store_nonce(&state.db, &nonce, now, now - NONCE_LIFETIME_MS).await?;
    Ok(Json(json!({ "nonce": nonce })))
}

#[derive(Deserialize)]
pub struct AdminRegisterBody {
    nonce: String,
    username: String,
    password: String,
    #[serde(default)]
    admin: bool,
    user_type: Option<String>,
    /// Accepted for compatibility; profiles are not stored yet.
    #[allow(dead_code)]
    displayname: Option<String>,
    mac: String,
}

/// The hex HMAC-SHA1 a caller must send: keyed by the shared secret, over
/// `nonce\0username\0password\0admin|notadmin[\0user_type]`.
fn check_mac(secret: &str, body: &AdminRegisterBody) -> bool {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret.as_bytes()) else { return false };
    mac.update(body.nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body.username.as_bytes());
    mac.update(b"\0");
    mac.update(body.password.as_bytes());
    mac.update(b"\0");
    mac.update(if body.admin { b"admin" } else { b"notadmin" });
    if let Some(user_type) = &body.user_type {
        mac.update(b"\0");
        mac.update(user_type.as_bytes());
    }
    let Ok(given) = hex::decode(body.mac.trim()) else { return false };
    mac.verify_slice(&given).is_ok()
}

/// `POST /_synapse/admin/v1/register`: create an account if `mac` proves
/// knowledge of the shared secret. The nonce is spent even when the MAC is
/// wrong, so each guess costs a round trip for a new nonce.
pub async fn register(
    State(state): State<AppState>,
    MatrixJson(body): MatrixJson<AdminRegisterBody>,
) -> Result<Json<Value>> {
    let secret = secret(&state)?;
    let issued = storage::registration::take_nonce(&state.db, &body.nonce).await?;
    if issued.is_none_or(|issued| issued < state.now_ms() - NONCE_LIFETIME_MS) {
        return Err(bad_request("unrecognised nonce").into());
    }
    if body.username.contains('\0') {
        return Err(bad_request("Invalid username").into());
    }
    if body.password.contains('\0') || body.password.len() > MAX_PASSWORD_LEN {
        return Err(bad_request("Invalid password").into());
    }
    if !matches!(body.user_type.as_deref(), None | Some("support" | "bot")) {
        return Err(MatrixError::invalid_param("Invalid user type").into());
    }
    if !check_mac(secret, &body) {
        return Err(MatrixError::forbidden("HMAC incorrect").into());
    }
    let registration = Registration {
        localpart: body.username.to_lowercase(),
        password: Some(body.password),
        admin: body.admin,
        user_type: body.user_type,
        is_guest: false,
        login: Some((None, None)),
        refreshable: false,
        by_app_service: false,
    };
    let (user_id, session) = accounts::register(&state, registration).await?;
    let session = session.ok_or_else(MatrixError::internal)?;
    Ok(Json(json!({
        "user_id": user_id,
        "access_token": session.access_token,
        "device_id": session.device_id,
        "home_server": state.server_name(),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(user_type: Option<&str>, mac: &str) -> AdminRegisterBody {
        AdminRegisterBody {
            nonce: "n".into(),
            username: "u".into(),
            password: "p".into(),
            admin: true,
            user_type: user_type.map(str::to_owned),
            displayname: None,
            mac: mac.into(),
        }
    }

    fn expected(message: &[u8]) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(b"s").unwrap();
        mac.update(message);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn mac_covers_every_field_and_the_user_type() {
        assert!(check_mac("s", &body(None, &expected(b"n\0u\0p\0admin"))));
        assert!(check_mac("s", &body(Some("bot"), &expected(b"n\0u\0p\0admin\0bot"))));
        assert!(!check_mac("s", &body(Some("bot"), &expected(b"n\0u\0p\0admin"))));
        assert!(!check_mac("s", &body(None, &expected(b"n\0u\0p\0notadmin"))));
        assert!(!check_mac("other", &body(None, &expected(b"n\0u\0p\0admin"))));
        assert!(!check_mac("s", &body(None, "not hex")));
    }
}
