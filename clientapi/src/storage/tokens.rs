//! `clientapi_access_tokens`: access tokens, stored only as their hash.

use myelin_storage::{Db, sqlx, with_db};

use super::accounts;

/// Who holds an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub user_id: String,
    pub device_id: String,
    pub is_guest: bool,
    pub is_admin: bool,
}

/// The owner of the token with this hash.
pub async fn lookup(db: &Db, token_hash: &str) -> Result<Option<Owner>, sqlx::Error> {
    let row: Option<(String, String)> = with_db!(db, pool => {
        sqlx::query_as("SELECT user_id, device_id FROM clientapi_access_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
    });
    let Some((user_id, device_id)) = row else { return Ok(None) };
    // Tokens are issued to local users only, whose account is keyed by localpart.
    let localpart = user_id.strip_prefix('@').and_then(|rest| rest.split_once(':')).map_or("", |(local, _)| local);
    let (is_guest, is_admin) = accounts::guest_and_admin(db, localpart).await?;
    Ok(Some(Owner { user_id, device_id, is_guest, is_admin }))
}
