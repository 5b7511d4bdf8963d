//! `clientapi_accounts`: one row per local user, keyed by localpart.

use myelin_storage::{Db, sqlx, with_db};
use serde_json::{Map, Value};

/// A new account's fields.
pub struct NewAccount<'a> {
    pub localpart: &'a str,
    /// An argon2id PHC string; `None` for accounts that cannot log in with a password.
    pub password_hash: Option<&'a str>,
    pub is_admin: bool,
    pub user_type: Option<&'a str>,
    pub is_guest: bool,
    pub created_ms: i64,
}

/// Insert the account; `false` when the localpart is taken.
pub async fn create(db: &Db, account: &NewAccount<'_>) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query(
            "INSERT INTO clientapi_accounts (localpart, password_hash, is_admin, user_type, is_guest, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (localpart) DO NOTHING",
        )
        .bind(account.localpart)
        .bind(account.password_hash)
        .bind(account.is_admin)
        .bind(account.user_type)
        .bind(account.is_guest)
        .bind(account.created_ms)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

pub async fn exists(db: &Db, localpart: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i64> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT created_ms FROM clientapi_accounts WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.is_some())
}

/// `None`: no such account; `Some(None)`: an account without a password.
pub async fn password_hash(db: &Db, localpart: &str) -> Result<Option<Option<String>>, sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query_scalar("SELECT password_hash FROM clientapi_accounts WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(pool)
            .await
    })
}

/// A local user's profile fields.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    /// Every other field (`m.tz` and custom ones), by name.
    pub fields: Map<String, Value>,
}

/// `None`: no such account.
pub async fn profile(db: &Db, localpart: &str) -> Result<Option<Profile>, sqlx::Error> {
    let row: Option<(Option<String>, Option<String>, String)> = with_db!(db, pool => {
        sqlx::query_as("SELECT displayname, avatar_url, profile_fields FROM clientapi_accounts WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(pool)
            .await?
    });
    row.map(|(displayname, avatar_url, fields)| -> Result<Profile, sqlx::Error> {
        let fields = serde_json::from_str(&fields).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(Profile { displayname, avatar_url, fields })
    })
    .transpose()
}

/// Store the profile; `false` when there is no such account.
pub async fn set_profile(db: &Db, localpart: &str, profile: &Profile) -> Result<bool, sqlx::Error> {
    let fields = Value::Object(profile.fields.clone()).to_string();
    let done = with_db!(db, pool => {
        sqlx::query(
            "UPDATE clientapi_accounts SET displayname = $2, avatar_url = $3, profile_fields = $4 \
             WHERE localpart = $1",
        )
        .bind(localpart)
        .bind(profile.displayname.as_deref())
        .bind(profile.avatar_url.as_deref())
        .bind(fields)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}

/// Replace the password; `false` when there is no such account.
pub async fn set_password_hash(db: &Db, localpart: &str, password_hash: &str) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query("UPDATE clientapi_accounts SET password_hash = $2 WHERE localpart = $1 AND NOT deactivated")
            .bind(localpart)
            .bind(password_hash)
            .execute(pool)
            .await?
            .rows_affected()
    });
    Ok(done == 1)
}

/// Mark the account deactivated and forget its password, so that it can
/// never log in again; its localpart stays taken.
pub async fn deactivate(db: &Db, localpart: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        sqlx::query("UPDATE clientapi_accounts SET deactivated = TRUE, password_hash = NULL WHERE localpart = $1")
            .bind(localpart)
            .execute(pool)
            .await?;
    });
    Ok(())
}

pub async fn is_deactivated(db: &Db, localpart: &str) -> Result<bool, sqlx::Error> {
    let found: Option<bool> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT deactivated FROM clientapi_accounts WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.unwrap_or(false))
}

/// Whether the account is a guest's and whether it is a server admin's
/// (both false for an unknown account).
pub async fn guest_and_admin(db: &Db, localpart: &str) -> Result<(bool, bool), sqlx::Error> {
    let found: Option<(bool, bool)> = with_db!(db, pool => {
        sqlx::query_as("SELECT is_guest, is_admin FROM clientapi_accounts WHERE localpart = $1")
            .bind(localpart)
            .fetch_optional(pool)
            .await?
    });
    Ok(found.unwrap_or((false, false)))
}

/// Whether the account is a guest's (`false` for no such account).
pub async fn is_guest(db: &Db, localpart: &str) -> Result<bool, sqlx::Error> {
    Ok(guest_and_admin(db, localpart).await?.0)
}

/// Turn a guest account into a full one with this password; `false` when
/// the account is not (or no longer) a guest's, so an upgrade happens once.
pub async fn upgrade_guest(db: &Db, localpart: &str, password_hash: Option<&str>) -> Result<bool, sqlx::Error> {
    let done = with_db!(db, pool => {
        sqlx::query(
            "UPDATE clientapi_accounts SET is_guest = FALSE, password_hash = $2 \
             WHERE localpart = $1 AND is_guest AND NOT deactivated",
        )
        .bind(localpart)
        .bind(password_hash)
        .execute(pool)
        .await?
        .rows_affected()
    });
    Ok(done == 1)
}
