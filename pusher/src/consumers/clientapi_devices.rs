//! `clientapi.devices`: a login publishes the user's push rules the first
//! time; a revocation evicts the tokens from the cache and removes the
//! pushers they set (logout, logout/all and device deletion all revoke).

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::{DeviceEvent, TokenResolver};

use crate::rules::PushRules;
use crate::storage::Storage;

pub struct DevicesConsumer {
    pub auth: Arc<TokenResolver>,
    pub storage: Arc<Storage>,
    pub rules: Arc<PushRules>,
}

#[async_trait]
impl Handler for DevicesConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event: DeviceEvent =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable device event: {e}")))?;
        match event {
            DeviceEvent::LoggedIn { user_id, .. } => self.rules.publish_defaults_once(&user_id).await,
            DeviceEvent::TokensRevoked { token_hashes, .. } => {
                // Evict first: the tokens are dead whether or not the delete succeeds.
                self.auth.revoke(&token_hashes);
                self.storage.delete_pushers_of_tokens(&token_hashes).await
            }
        }
        .map_err(|e| HandleError::Transient(e.to_string()))
    }
}
