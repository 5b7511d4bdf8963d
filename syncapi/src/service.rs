//! Lifecycle of the sync API: migrate its tables, start its consumers,
//! hand back its router.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_config::Config;
use myelin_storage::Db;
use tokio::task::JoinHandle;

use crate::SyncApiError;
use crate::auth::Authenticator;
use crate::consumers::clientapi_devices::DevicesConsumer;
use crate::consumers::roomserver_output::OutputConsumer;
use crate::notifier::Notifier;
use crate::routing::{AppState, router};
use crate::storage::Storage;

/// Consumer group of the room read model.
pub const OUTPUT_GROUP: &str = "syncapi";
/// Consumer group of the token cache eviction.
pub const DEVICES_GROUP: &str = "syncapi.devices";

pub struct Started {
    pub router: axum::Router,
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

pub async fn start(_config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, SyncApiError> {
    let storage = Arc::new(Storage::open(db).await?);
    let notifier = Arc::new(Notifier::new(storage.max_pos().await?));
    let auth = Arc::new(Authenticator::new(bus.clone()));
    let tasks = vec![
        bus.consume(
            OUTPUT_GROUP,
            myelin_roomserver::api::OUTPUT_TOPIC,
            Arc::new(OutputConsumer { storage: storage.clone(), notifier: notifier.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            DEVICES_GROUP,
            myelin_clientapi::api::DEVICES_TOPIC,
            Arc::new(DevicesConsumer { auth: auth.clone() }),
            shutdown,
        ),
    ];
    Ok(Started { router: router(AppState { storage, notifier, auth }), tasks })
}
