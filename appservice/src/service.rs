//! Lifecycle of the application service component: load the
//! registrations, migrate its tables, follow `roomserver.output`, and run
//! one sender per service that has a `url`.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_config::Config;
use myelin_config::appservice::load_app_services;
use myelin_roomserver::api::OUTPUT_TOPIC;
use myelin_storage::Db;
use myelin_types::ruma::OwnedServerName;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::AppServiceError;
use crate::consumers::roomserver_output::{OutputConsumer, Target};
use crate::sender::{self, Sender};
use crate::storage::Storage;

/// Consumer group of the room events queued for services.
pub const OUTPUT_GROUP: &str = "appservice.roomserver";

/// What a started component leaves running: its consumer and its senders.
pub struct Started {
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

/// Load the registrations, migrate the tables, and start the consumer and
/// one sender per service with a `url`. Bad registrations fail the start.
pub async fn start(config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, AppServiceError> {
    let server_name = OwnedServerName::try_from(config.global.server_name.as_str())
        .map_err(|_| AppServiceError::ServerName(config.global.server_name.clone()))?;
    let services = load_app_services(&config.global.app_service_config_files, &config.global.server_name)
        .map_err(|errors| AppServiceError::Config(errors.to_string()))?;
    let storage = Arc::new(Storage::open(db).await?);
    let http = sender::client()?;
    let mut targets = Vec::new();
    let mut tasks = Vec::new();
    // A service without a `url` receives nothing, so nothing is queued for it.
    for service in services {
        let Some(url) = service.registration.url.as_deref().filter(|url| !url.is_empty()) else { continue };
        let wake = Arc::new(Notify::new());
        let sender = Sender {
            url: url.trim_end_matches('/').to_owned(),
            service: service.clone(),
            storage: storage.clone(),
            http: http.clone(),
            wake: wake.clone(),
        };
        tasks.push(sender.spawn(shutdown.clone()));
        targets.push(Target { service, wake });
    }
    let sending: Vec<&str> = targets.iter().map(|target| target.service.id()).collect();
    let dropped = storage.forget_services_except(&sending).await?;
    if dropped > 0 {
        tracing::info!(dropped, "dropped the events queued for services no longer sent to");
    }
    let output = OutputConsumer { storage, targets: targets.into(), server_name };
    tasks.push(bus.consume(OUTPUT_GROUP, OUTPUT_TOPIC, Arc::new(output), shutdown));
    Ok(Started { tasks })
}
