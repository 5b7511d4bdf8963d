//! Records on `clientapi.devices`, published after the database change
//! they describe is committed.

use myelin_bus::{Bus, BusError};
use myelin_types::ruma::OwnedUserId;

use crate::api::{DEVICES_TOPIC, DeviceEvent};

pub async fn logged_in(bus: &Bus, user_id: &OwnedUserId, device_id: &str) -> Result<(), BusError> {
    let event = DeviceEvent::LoggedIn { user_id: user_id.clone(), device_id: device_id.to_owned() };
    bus.produce_json(DEVICES_TOPIC, user_id.as_str(), &event).await?;
    Ok(())
}

/// Nothing is published when no token was revoked.
pub async fn tokens_revoked(bus: &Bus, user_id: &OwnedUserId, token_hashes: Vec<String>) -> Result<(), BusError> {
    if token_hashes.is_empty() {
        return Ok(());
    }
    let event = DeviceEvent::TokensRevoked { user_id: user_id.clone(), token_hashes };
    bus.produce_json(DEVICES_TOPIC, user_id.as_str(), &event).await?;
    Ok(())
}
