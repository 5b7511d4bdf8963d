//! Records on `clientapi.accountdata` (after the database commit),
//! `edu.typing`, `edu.receipt`, `edu.todevice` and `clientapi.keychange`
//! (after the database commit), and `clientapi.forgotten`.

use myelin_bus::{Bus, BusError};

use crate::api::{
    ACCOUNT_DATA_TOPIC, AccountDataUpdate, ERASED_TOPIC, FORGOTTEN_TOPIC, KEY_CHANGE_TOPIC, KeyChange, RECEIPT_TOPIC,
    ReceiptUpdate, RoomForgotten, TO_DEVICE_TOPIC, TYPING_TOPIC, ToDeviceMessage, TypingUpdate, UserErased,
};

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

pub async fn to_device(bus: &Bus, message: &ToDeviceMessage) -> Result<(), BusError> {
    bus.produce_json(TO_DEVICE_TOPIC, message.user_id.as_str(), message).await?;
    Ok(())
}

pub async fn key_change(bus: &Bus, change: &KeyChange) -> Result<(), BusError> {
    bus.produce_json(KEY_CHANGE_TOPIC, change.user_id.as_str(), change).await?;
    Ok(())
}

pub async fn user_erased(bus: &Bus, record: &UserErased) -> Result<(), BusError> {
    bus.produce_json(ERASED_TOPIC, record.user_id.as_str(), record).await?;
    Ok(())
}

pub async fn room_forgotten(bus: &Bus, record: &RoomForgotten) -> Result<(), BusError> {
    bus.produce_json(FORGOTTEN_TOPIC, record.user_id.as_str(), record).await?;
    Ok(())
}
