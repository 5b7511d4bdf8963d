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
    /// When a refreshable token expires (ms on the bus clock); `None`: never.
    pub expires_ms: Option<i64>,
}

/// The owner of the token with this hash. The first use of an access token
/// issued by `/refresh` retires the refresh token that was refreshed.
pub async fn lookup(db: &Db, token_hash: &str) -> Result<Option<Owner>, sqlx::Error> {
    let row: Option<(String, String, Option<i64>, Option<String>)> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT user_id, device_id, expires_ms, retires_refresh_hash FROM clientapi_access_tokens \
             WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(pool)
        .await?
    });
    let Some((user_id, device_id, expires_ms, retires)) = row else { return Ok(None) };
    if let Some(retired) = retires {
        super::refresh_tokens::retire(db, token_hash, &retired).await?;
    }
    // Tokens are issued to local users only, whose account is keyed by localpart.
    let localpart = user_id.strip_prefix('@').and_then(|rest| rest.split_once(':')).map_or("", |(local, _)| local);
    let (is_guest, is_admin) = accounts::guest_and_admin(db, localpart).await?;
    Ok(Some(Owner { user_id, device_id, is_guest, is_admin, expires_ms }))
}
