//! `clientapi.devices`: evict revoked tokens from the authentication cache.

use std::sync::Arc;

use async_trait::async_trait;
use myelin_bus::{HandleError, Handler, Record};
use myelin_clientapi::api::DeviceEvent;

use crate::auth::Authenticator;

pub struct DevicesConsumer {
    pub auth: Arc<Authenticator>,
}

#[async_trait]
impl Handler for DevicesConsumer {
    async fn handle(&self, record: &Record) -> Result<(), HandleError> {
        let event: DeviceEvent =
            record.json().map_err(|e| HandleError::Poison(format!("undecodable device event: {e}")))?;
        match event {
            DeviceEvent::LoggedIn { .. } => {}
            DeviceEvent::TokensRevoked { token_hashes, .. } => self.auth.revoke(&token_hashes),
        }
        Ok(())
    }
}
