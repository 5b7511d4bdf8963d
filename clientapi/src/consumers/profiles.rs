//! Answers `clientapi.profiles`: a local user's public profile, so that the
//! federation API serves `/query/profile` without reading our tables.

use async_trait::async_trait;
use myelin_bus::{HandleError, Record, Responder};
use myelin_storage::Db;

use crate::api::{ProfileQuery, ProfileReply, PublicProfile};
use crate::storage::accounts;

pub const GROUP: &str = "clientapi.profiles";

pub struct ProfileResponder {
    pub db: Db,
}

#[async_trait]
impl Responder for ProfileResponder {
    async fn respond(&self, request: &Record) -> Result<Vec<u8>, HandleError> {
        let ProfileQuery { user_id } =
            request.json().map_err(|e| HandleError::Poison(format!("bad profile query: {e}")))?;
        let found = accounts::profile(&self.db, user_id.localpart())
            .await
            .map_err(|e| HandleError::Transient(e.to_string()))?;
        let reply: ProfileReply = found.map(|profile| PublicProfile {
            displayname: profile.displayname,
            avatar_url: profile.avatar_url,
            fields: profile.fields,
        });
        serde_json::to_vec(&reply).map_err(|e| HandleError::Poison(e.to_string()))
    }
}
