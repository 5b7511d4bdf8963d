//! Account and session logic shared by registration and login: password
//! hashing (argon2id), user id validation, and starting or ending a
//! device's session (database first, then the `clientapi.devices` record).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use myelin_types::ruma::OwnedUserId;
use myelin_types::{ErrorCode, MatrixError, random};

use crate::error::{ClientApiError, Result};
use crate::producers;
use crate::service::AppState;
use crate::storage::{accounts, devices};

/// Longest password accepted (as Synapse): hashing is costly.
pub const MAX_PASSWORD_LEN: usize = 512;

/// Runs one argon2 computation off the async threads. Each takes ~19 MiB,
/// so at most one per core runs at once: a burst of logins queues instead
/// of multiplying the server's memory.
async fn with_hasher<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    static HASHERS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    let hashers = HASHERS
        .get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())));
    let _permit = hashers.acquire().await.expect("the hasher semaphore is never closed");
    tokio::task::spawn_blocking(work).await?
}

/// The argon2id PHC string of `password` (default parameters).
pub async fn hash_password(password: String) -> Result<String> {
    with_hasher(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|hash| hash.to_string())
            .map_err(|e| ClientApiError::PasswordHash(e.to_string()))
    })
    .await
}

/// Whether `password` matches `stored`. Without a stored hash the password
/// is still checked against a throwaway hash, so that unknown users take
/// as long as known ones.
pub async fn verify_password(password: String, stored: Option<String>) -> Result<bool> {
    with_hasher(move || {
        let (phc, real) = match stored {
            Some(phc) => (phc, true),
            None => (decoy_hash().to_owned(), false),
        };
        let parsed = PasswordHash::new(&phc).map_err(|e| ClientApiError::PasswordHash(e.to_string()))?;
        let matches = Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok();
        Ok(real && matches)
    })
    .await
}

fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        Argon2::default()
            .hash_password(random::alphanumeric(32).as_bytes())
            .map(|hash| hash.to_string())
            .unwrap_or_default()
    })
}

/// Check a requested localpart and build the user id. The spec's
/// historical grammar is accepted for existing users, but new ones get
/// only `a-z 0-9 . _ = - / +`, not starting with `_` (reserved).
pub fn new_user_id(localpart: &str, server_name: &str) -> Result<OwnedUserId, MatrixError> {
    if localpart.starts_with('_') {
        return Err(MatrixError::new(ErrorCode::InvalidUsername, "User ID may not begin with _"));
    }
    new_app_service_user_id(localpart, server_name)
}

/// Like [`new_user_id`], for application services, which may take the
/// localparts starting with `_` that are reserved for them.
pub fn new_app_service_user_id(localpart: &str, server_name: &str) -> Result<OwnedUserId, MatrixError> {
    let invalid = |why: &str| MatrixError::new(ErrorCode::InvalidUsername, why);
    if localpart.is_empty() {
        return Err(invalid("User ID cannot be empty"));
    }
    if !localpart.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+')) {
        return Err(invalid("User ID can only contain characters a-z, 0-9, or '=_-./+'"));
    }
    let user_id = format!("@{localpart}:{server_name}");
    if user_id.len() > 255 {
        return Err(invalid("User ID is too long"));
    }
    OwnedUserId::try_from(user_id).map_err(|_| invalid("Invalid user ID"))
}

/// A device's fresh access token, returned to the client once, with a
/// refresh token when the client asked for one.
pub struct Session {
    pub device_id: String,
    pub access_token: String,
    /// The refresh token and the access token's lifetime in milliseconds.
    pub refresh: Option<(String, i64)>,
}

impl Session {
    /// `access_token`, `device_id`, and `refresh_token` with `expires_in_ms`
    /// when refreshable, into a `/login` or `/register` reply.
    pub fn add_to(self, reply: &mut serde_json::Value) {
        reply["access_token"] = self.access_token.into();
        reply["device_id"] = self.device_id.into();
        if let Some((refresh_token, expires_in_ms)) = self.refresh {
            reply["refresh_token"] = refresh_token.into();
            reply["expires_in_ms"] = expires_in_ms.into();
        }
    }
}

/// The lifetime of refreshable access tokens, from the configuration.
pub fn refreshable_lifetime_ms(state: &AppState) -> i64 {
    i64::try_from(state.config.client_api.refreshable_access_token_lifetime_ms).unwrap_or(i64::MAX)
}

/// Give `device_id` (or a new device) a new access token, expiring and with
/// a refresh token when `refreshable`.
pub async fn start_session(
    state: &AppState,
    user_id: &OwnedUserId,
    device_id: Option<String>,
    display_name: Option<String>,
    refreshable: bool,
) -> Result<Session> {
    let device_id = device_id.filter(|d| !d.is_empty()).unwrap_or_else(random::device_id);
    if device_id.len() > 255 {
        return Err(MatrixError::invalid_param("device_id is too long").into());
    }
    let access_token = random::access_token();
    let hash = random::token_hash(&access_token);
    let now = state.now_ms();
    let lifetime = refreshable_lifetime_ms(state);
    let refresh_token = refreshable.then(random::access_token);
    let refresh_hash = refresh_token.as_deref().map(random::token_hash);
    let refresh = refresh_hash
        .as_deref()
        .map(|token_hash| devices::NewRefresh { token_hash, access_expires_ms: now.saturating_add(lifetime) });
    let revoked = devices::start_session(
        &state.db,
        user_id.as_str(),
        &device_id,
        display_name.as_deref(),
        &hash,
        now,
        refresh.as_ref(),
    )
    .await?;
    producers::devices::tokens_revoked(&state.bus, user_id, revoked).await?;
    producers::devices::logged_in(&state.bus, user_id, &device_id).await?;
    // A new device is a change of the user's device list (as is a login
    // that replaced a device's keys, which the device then uploads anew).
    crate::keys::publish(&state.db, &state.bus, user_id, &device_id, true).await?;
    Ok(Session { device_id, access_token, refresh: refresh_token.map(|token| (token, lifetime)) })
}

/// End one device's session (its tokens and the device itself).
pub async fn end_session(state: &AppState, user_id: &OwnedUserId, device_id: &str) -> Result<()> {
    let revoked = devices::end_session(&state.db, user_id.as_str(), device_id).await?;
    let ended = !revoked.is_empty();
    producers::devices::tokens_revoked(&state.bus, user_id, revoked).await?;
    if ended {
        // The device and its keys are gone: a device list change.
        crate::keys::publish(&state.db, &state.bus, user_id, device_id, true).await?;
    }
    Ok(())
}

/// End every session of the user.
pub async fn end_all_sessions(state: &AppState, user_id: &OwnedUserId) -> Result<()> {
    let revoked = devices::end_all_sessions(&state.db, user_id.as_str()).await?;
    producers::devices::tokens_revoked(&state.bus, user_id, revoked).await?;
    Ok(())
}

/// What a registration asks for.
pub struct Registration {
    pub localpart: String,
    pub password: Option<String>,
    pub admin: bool,
    pub user_type: Option<String>,
    pub is_guest: bool,
    /// `None`: `inhibit_login`; else the device id and display name asked for.
    pub login: Option<(Option<String>, Option<String>)>,
    /// The client asked for a refresh token (`refresh_token: true`).
    pub refreshable: bool,
    /// Registered by an application service, which may take localparts
    /// starting with `_`.
    pub by_app_service: bool,
}

/// Create the account (`400 M_USER_IN_USE` if taken) and, unless login is
/// inhibited, its first session.
pub async fn register(state: &AppState, registration: Registration) -> Result<(OwnedUserId, Option<Session>)> {
    let user_id = if registration.by_app_service {
        new_app_service_user_id(&registration.localpart, state.server_name())?
    } else {
        new_user_id(&registration.localpart, state.server_name())?
    };
    let password_hash = match registration.password {
        Some(password) => Some(hash_password(password).await?),
        None => None,
    };
    let created = accounts::create(
        &state.db,
        &accounts::NewAccount {
            localpart: &registration.localpart,
            password_hash: password_hash.as_deref(),
            is_admin: registration.admin,
            user_type: registration.user_type.as_deref(),
            is_guest: registration.is_guest,
            created_ms: state.now_ms(),
        },
    )
    .await?;
    if !created {
        return Err(user_in_use().into());
    }
    let session = match registration.login {
        Some((device_id, display_name)) => {
            Some(start_session(state, &user_id, device_id, display_name, registration.refreshable).await?)
        }
        None => None,
    };
    Ok((user_id, session))
}

pub fn user_in_use() -> MatrixError {
    MatrixError::new(ErrorCode::UserInUse, "User ID already taken")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_user_ids_follow_the_strict_grammar() {
        assert_eq!(
            new_user_id("alice.b-c_d=e/f+g", "example.org:8448").unwrap().as_str(),
            "@alice.b-c_d=e/f+g:example.org:8448"
        );
        for bad in ["", "_bridge", "Alice", "al ice", "al@ice", "al:ice", "é"] {
            assert_eq!(new_user_id(bad, "x").unwrap_err().errcode, ErrorCode::InvalidUsername, "{bad:?}");
        }
        assert!(new_user_id(&"a".repeat(250), "example.org").is_err());
    }

    #[tokio::test]
    async fn passwords_verify_only_against_their_hash() {
        let hash = hash_password("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse".into(), Some(hash.clone())).await.unwrap());
        assert!(!verify_password("wrong".into(), Some(hash)).await.unwrap());
        assert!(!verify_password("anything".into(), None).await.unwrap());
    }
}
