//! Registration tokens, with Synapse's counting: a token is valid while
//! unexpired and `pending + completed < uses_allowed` (no limit when
//! `uses_allowed` is null). Passing the UIA stage takes a pending use,
//! bound to the session; registering turns it into a completed one; a
//! session that expires first gives it back (see `registration.rs`).

use myelin_storage::{Db, WritePool, sqlx, with_db};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    pub uses_allowed: Option<i64>,
    pub pending: i64,
    pub completed: i64,
    pub expiry_time: Option<i64>,
}

impl RegistrationToken {
    pub fn is_valid(&self, now_ms: i64) -> bool {
        self.uses_allowed.is_none_or(|allowed| self.pending + self.completed < allowed)
            && self.expiry_time.is_none_or(|expiry| expiry > now_ms)
    }
}

type TokenRow = (String, Option<i64>, i64, i64, Option<i64>);

fn token_of((token, uses_allowed, pending, completed, expiry_time): TokenRow) -> RegistrationToken {
    RegistrationToken { token, uses_allowed, pending, completed, expiry_time }
}

/// Create a token; `false` if one with this name exists.
pub async fn create(db: &Db, token: &RegistrationToken) -> Result<bool, sqlx::Error> {
    with_db!(db, pool => {
        let done = sqlx::query(
            "INSERT INTO clientapi_registration_tokens (token, uses_allowed, pending, completed, expiry_time) \
             VALUES ($1, $2, 0, 0, $3) ON CONFLICT (token) DO NOTHING",
        )
        .bind(&token.token)
        .bind(token.uses_allowed)
        .bind(token.expiry_time)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
    })
}

pub async fn get(db: &Db, token: &str) -> Result<Option<RegistrationToken>, sqlx::Error> {
    let row: Option<TokenRow> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT token, uses_allowed, pending, completed, expiry_time FROM clientapi_registration_tokens \
             WHERE token = $1",
        )
        .bind(token)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(token_of))
}

pub async fn list(db: &Db) -> Result<Vec<RegistrationToken>, sqlx::Error> {
    let rows: Vec<TokenRow> = with_db!(db, pool => {
        sqlx::query_as(
            "SELECT token, uses_allowed, pending, completed, expiry_time FROM clientapi_registration_tokens \
             ORDER BY token",
        )
        .fetch_all(pool)
        .await?
    });
    Ok(rows.into_iter().map(token_of).collect())
}

/// Set both limits; the token after the change, `None` if unknown.
pub async fn update(
    db: &Db,
    token: &str,
    uses_allowed: Option<i64>,
    expiry_time: Option<i64>,
) -> Result<Option<RegistrationToken>, sqlx::Error> {
    let row: Option<TokenRow> = with_db!(db, pool => {
        sqlx::query_as(
            "UPDATE clientapi_registration_tokens SET uses_allowed = $2, expiry_time = $3 WHERE token = $1 \
             RETURNING token, uses_allowed, pending, completed, expiry_time",
        )
        .bind(token)
        .bind(uses_allowed)
        .bind(expiry_time)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(token_of))
}

pub async fn delete(db: &Db, token: &str) -> Result<bool, sqlx::Error> {
    with_db!(db, pool => {
        let done =
            sqlx::query("DELETE FROM clientapi_registration_tokens WHERE token = $1").bind(token).execute(pool).await?;
        Ok(done.rows_affected() == 1)
    })
}

/// The token a session passed the token stage with, if it has.
pub async fn of_session(db: &Db, session_id: &str) -> Result<Option<String>, sqlx::Error> {
    let token: Option<Option<String>> = with_db!(db, pool => {
        sqlx::query_scalar("SELECT registration_token FROM clientapi_uia_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(pool)
            .await?
    });
    Ok(token.flatten())
}

/// Take one pending use of a valid token for the session, in one
/// transaction; `false` if the token is unknown, used up or expired.
pub async fn take_pending(db: &Db, token: &str, session_id: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        let taken = sqlx::query(
            "UPDATE clientapi_registration_tokens SET pending = pending + 1 WHERE token = $1 \
             AND (uses_allowed IS NULL OR pending + completed < uses_allowed) \
             AND (expiry_time IS NULL OR expiry_time > $2)",
        )
        .bind(token)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !taken {
            return Ok(false);
        }
        let bound = sqlx::query(
            "UPDATE clientapi_uia_sessions SET registration_token = $2 WHERE session_id = $1 \
             AND registration_token IS NULL",
        )
        .bind(session_id)
        .bind(token)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !bound {
            // The session is gone or already holds a use: take nothing.
            return Ok(false);
        }
        tx.commit().await?;
        Ok(true)
    })
}

/// The session registered: its pending use becomes a completed one, and
/// the session ends.
pub async fn complete(db: &Db, session_id: &str) -> Result<(), sqlx::Error> {
    with_db!(db, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query(
            "UPDATE clientapi_registration_tokens SET pending = pending - 1, completed = completed + 1 \
             WHERE token = (SELECT registration_token FROM clientapi_uia_sessions WHERE session_id = $1)",
        )
        .bind(session_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM clientapi_uia_sessions WHERE session_id = $1").bind(session_id).execute(&mut *tx).await?;
        tx.commit().await?;
    });
    Ok(())
}
