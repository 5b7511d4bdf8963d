//! Answers `clientapi.openid`: whose OpenID token this is, so that the
//! federation API serves `/openid/userinfo` without reading our tables.
//! Expiry is judged here, on the bus clock.

use async_trait::async_trait;
use myelin_bus::{Bus, HandleError, Record, Responder};
use myelin_storage::Db;
use myelin_types::ruma::OwnedUserId;

use crate::api::{OpenIdQuery, OpenIdReply};
use crate::storage::openid;

pub const GROUP: &str = "clientapi.openid";

pub struct OpenIdResponder {
    pub db: Db,
    pub bus: Bus,
}

#[async_trait]
impl Responder for OpenIdResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let OpenIdQuery { token_hash } =
            request.json().map_err(|e| HandleError::Poison(format!("bad OpenID query: {e}")))?;
        let now = i64::try_from(self.bus.clock().now_ms()).unwrap_or(i64::MAX);
        let user =
            openid::user_of(&self.db, &token_hash, now).await.map_err(|e| HandleError::Transient(e.to_string()))?;
        let reply: OpenIdReply = user.and_then(|user| OwnedUserId::try_from(user).ok());
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
