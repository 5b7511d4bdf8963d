//! Records on `clientapi.accountdata` (after the database commit),
//! `edu.typing` and `edu.receipt`.

use myelin_bus::{Bus, BusError};

use crate::api::{ACCOUNT_DATA_TOPIC, AccountDataUpdate, RECEIPT_TOPIC, ReceiptUpdate, TYPING_TOPIC, TypingUpdate};

pub async fn account_data(bus: &Bus, update: &AccountDataUpdate) -> Result<(), BusError> {
    bus.produce_json(ACCOUNT_DATA_TOPIC, update.user_id.as_str(), update).await?;
    Ok(())
}

pub async fn typing(bus: &Bus, update: &TypingUpdate) -> Result<(), BusError> {
    bus.produce_json(TYPING_TOPIC, update.room_id.as_str(), update).await?;
    Ok(())
}

pub async fn receipt(bus: &Bus, update: &ReceiptUpdate) -> Result<(), BusError> {
    bus.produce_json(RECEIPT_TOPIC, update.room_id.as_str(), update).await?;
    Ok(())
}
