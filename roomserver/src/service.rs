//! The room server's lifecycle: migrate, load the signing key, serve.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_config::Config;
use myelin_storage::Db;
use myelin_types::signing::ServerSigningKey;
use ruma::ServerName;
use tokio::task::JoinHandle;

use crate::api::{INPUT_TOPIC, QUERY_TOPIC};
use crate::consumers::input::InputConsumer;
use crate::consumers::query::QueryConsumer;
use crate::error::RoomServerError;
use crate::events::{Signer, create_room};
use crate::producers::output::OutputProducer;
use crate::storage::MIGRATIONS;

/// The running room server: its consumer tasks, which end on shutdown.
pub struct Started {
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

/// Migrate the room server's tables, load the signing key and answer
/// `roomserver.input` (group `roomserver`) and `roomserver.query` (group
/// `roomserver.query`) until `shutdown`.
pub async fn start(config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, RoomServerError> {
    let default_room_version = config.roomserver.default_room_version.clone();
    create_room::room_version(None, &default_room_version)
        .map_err(|_| RoomServerError::DefaultRoomVersion(default_room_version.clone()))?;
    let server_name = ServerName::parse(&config.global.server_name)
        .map_err(|_| RoomServerError::ServerName(config.global.server_name.clone()))?;
    let key = ServerSigningKey::load(&config.global.signing_key_path)?;
    db.migrate("roomserver", MIGRATIONS).await?;

    let query = QueryConsumer { db: db.clone(), server_name: server_name.clone() };
    let input = InputConsumer {
        db: db.clone(),
        bus: bus.clone(),
        signer: Arc::new(Signer { server_name, key }),
        default_room_version,
        output: OutputProducer::new(bus.clone()),
    };
    let input = bus.serve("roomserver", INPUT_TOPIC, Arc::new(input), shutdown.clone());
    let query = bus.serve("roomserver.query", QUERY_TOPIC, Arc::new(query), shutdown);
    Ok(Started { tasks: vec![input, query] })
}
