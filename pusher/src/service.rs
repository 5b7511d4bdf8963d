//! Lifecycle of the pusher: migrate its tables, follow logins and
//! revocations, hand back its router.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_clientapi::api::{DEVICES_TOPIC, TokenResolver};
use myelin_config::Config;
use myelin_storage::Db;
use tokio::task::JoinHandle;

use crate::PusherError;
use crate::consumers::clientapi_devices::DevicesConsumer;
use crate::routing::{AppState, router};
use crate::rules::PushRules;
use crate::storage::Storage;

/// Consumer group of logins (default rules) and revocations (token cache, pushers).
pub const DEVICES_GROUP: &str = "pusher.devices";

pub struct Started {
    pub router: axum::Router,
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

pub async fn start(_config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, PusherError> {
    let storage = Arc::new(Storage::open(db).await?);
    let auth = Arc::new(TokenResolver::new(bus.clone()));
    let rules = Arc::new(PushRules { storage: storage.clone(), bus: bus.clone() });
    let devices = DevicesConsumer { auth: auth.clone(), storage: storage.clone(), rules: rules.clone() };
    let tasks = vec![bus.consume(DEVICES_GROUP, DEVICES_TOPIC, Arc::new(devices), shutdown)];
    Ok(Started { router: router(AppState { storage, rules, auth }), tasks })
}
