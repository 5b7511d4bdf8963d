//! `m.push_rules` account data on `clientapi.accountdata`, which the sync
//! API consumes as it does the client API's own account data.

use myelin_bus::{Bus, BusError};
use myelin_clientapi::api::{ACCOUNT_DATA_TOPIC, AccountDataUpdate};
use myelin_types::ruma::OwnedUserId;
use serde_json::Value;

use crate::api::PUSH_RULES_TYPE;

/// `content` is the whole `{"global": …}` object, so a redelivery changes nothing.
pub async fn push_rules(bus: &Bus, user_id: &OwnedUserId, content: Value) -> Result<(), BusError> {
    let update =
        AccountDataUpdate { user_id: user_id.clone(), room_id: None, data_type: PUSH_RULES_TYPE.to_owned(), content };
    bus.produce_json(ACCOUNT_DATA_TOPIC, user_id.as_str(), &update).await?;
    Ok(())
}
