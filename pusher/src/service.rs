//! Lifecycle of the pusher: migrate its tables, follow logins and
//! revocations, account data, room events and receipts, deliver to push
//! gateways, hand back its router.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_clientapi::api::{ACCOUNT_DATA_TOPIC, DEVICES_TOPIC, RECEIPT_TOPIC, TokenResolver};
use myelin_config::Config;
use myelin_roomserver::api::OUTPUT_TOPIC;
use myelin_storage::Db;
use myelin_types::ruma::OwnedServerName;
use tokio::task::JoinHandle;

use crate::PusherError;
use crate::consumers::clientapi_accountdata::AccountDataConsumer;
use crate::consumers::clientapi_devices::DevicesConsumer;
use crate::consumers::edu_receipt::ReceiptConsumer;
use crate::consumers::roomserver_output::OutputConsumer;
use crate::delivery::Delivery;
use crate::routing::{AppState, router};
use crate::rules::PushRules;
use crate::storage::Storage;

/// Consumer group of logins (default rules) and revocations (token cache, pushers).
pub const DEVICES_GROUP: &str = "pusher.devices";
/// Consumer group of the room read model, notifications and counts.
pub const OUTPUT_GROUP: &str = "pusher.roomserver";
/// Consumer group of ignored users and push rule changes.
pub const ACCOUNT_DATA_GROUP: &str = "pusher.accountdata";
/// Consumer group of read receipts, which clear counts.
pub const RECEIPT_GROUP: &str = "pusher.receipt";

pub struct Started {
    pub router: axum::Router,
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

pub async fn start(config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, PusherError> {
    let server_name = OwnedServerName::try_from(config.global.server_name.as_str())
        .map_err(|_| PusherError::ServerName(config.global.server_name.clone()))?;
    let storage = Arc::new(Storage::open(db).await?);
    let auth = Arc::new(TokenResolver::new(bus.clone()));
    let rules = Arc::new(PushRules::new(storage.clone(), bus.clone()));
    let delivery = Arc::new(Delivery::new(storage.clone(), bus.clock().clone(), &config.pusher)?);
    let devices = DevicesConsumer { auth: auth.clone(), storage: storage.clone(), rules: rules.clone() };
    let output = OutputConsumer {
        storage: storage.clone(),
        rules: rules.clone(),
        bus: bus.clone(),
        delivery: delivery.clone(),
        server_name,
        content: config.pusher.content,
        max_push_age_ms: i64::try_from(config.pusher.give_up_after_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
        rooms: Default::default(),
    };
    let account_data = AccountDataConsumer { storage: storage.clone(), rules: rules.clone() };
    let receipts = ReceiptConsumer { storage: storage.clone(), bus: bus.clone() };
    let tasks = vec![
        bus.consume(DEVICES_GROUP, DEVICES_TOPIC, Arc::new(devices), shutdown.clone()),
        bus.consume(OUTPUT_GROUP, OUTPUT_TOPIC, Arc::new(output), shutdown.clone()),
        bus.consume(ACCOUNT_DATA_GROUP, ACCOUNT_DATA_TOPIC, Arc::new(account_data), shutdown.clone()),
        bus.consume(RECEIPT_GROUP, RECEIPT_TOPIC, Arc::new(receipts), shutdown.clone()),
        delivery.spawn(shutdown),
    ];
    Ok(Started { router: router(AppState { storage, rules, auth }), tasks })
}
