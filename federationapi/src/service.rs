//! Lifecycle of the federation API: migrate its tables, build the key store
//! and the outbound client, answer `federationapi.query` and
//! `federationapi.perform`, fetch other servers' media and profiles for the
//! client API (`federationapi.media`, `federationapi.profiles`), run the sender from `roomserver.output`,
//! `edu.typing`, `edu.receipt` and `edu.todevice`, and
//! serve the TLS listener until shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use myelin_bus::{Bus, Shutdown};
use myelin_clientapi::api::{
    KEY_CHANGE_TOPIC, MediaStore, PRESENCE_TOPIC, RECEIPT_TOPIC, REMOTE_KEYS_TOPIC, REMOTE_MEDIA_TOPIC,
    REMOTE_PROFILE_TOPIC, TO_DEVICE_TOPIC, TYPING_TOPIC,
};
use myelin_config::Config;
use myelin_roomserver::api::{FEDERATION_PERFORM_TOPIC, FEDERATION_QUERY_TOPIC, OUTPUT_TOPIC};
use myelin_storage::{Db, StorageError};
use myelin_types::clock::SharedClock;
use myelin_types::ruma::OwnedServerName;
use myelin_types::signing::ServerSigningKey;
use tokio::task::JoinHandle;

use crate::client::{ClientError, FederationClient};
use crate::consumers::device_lists::{self, DeviceListConsumer};
use crate::consumers::edus::{self, EduConsumer, PresenceConsumer, ReceiptConsumer, ToDeviceConsumer, TypingConsumer};
use crate::consumers::perform::{self, PerformResponder};
use crate::consumers::query::{self, QueryResponder};
use crate::consumers::remote_keys::{self, RemoteKeysResponder};
use crate::consumers::remote_media::{self, RemoteMediaResponder};
use crate::consumers::remote_profiles::{self, RemoteProfileResponder};
use crate::consumers::roomserver_output::{self, OutputConsumer};
use crate::keys::KeyStore;
use crate::routing::{FederationState, router};
use crate::sender::Sender;
use crate::storage::{COMPONENT, MIGRATIONS};

/// In-flight requests get this long to finish once shutdown is requested.
const GRACE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("cannot load TLS certificate {certificate} / key {key}: {source}")]
    Tls { certificate: PathBuf, key: PathBuf, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("migrating the federation API's tables: {0}")]
    Migrate(#[from] StorageError),
    #[error("setting up the federation client: {0}")]
    Client(#[from] ClientError),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("reading the send queue: {0}")]
    Queue(#[from] myelin_storage::sqlx::Error),
}

/// A running federation API.
pub struct Started {
    /// The bound address; differs from the configured one when its port is 0.
    pub local_addr: SocketAddr,
    /// The listener, the responders and the sender's consumer; they end after shutdown.
    pub tasks: Vec<JoinHandle<Result<(), String>>>,
    /// The outbound client, shared with whoever needs to reach other servers.
    pub client: Arc<FederationClient>,
}

/// Install aws-lc-rs as the process's rustls provider. The workspace builds
/// rustls without a default provider, so this must happen before any TLS
/// config is built; a second call (or one from another crate) is harmless.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Start the federation API with the outbound client built from the
/// configuration (system DNS and roots, `federation_api.ca_file`, the
/// address policy).
///
/// - `signing_key` signs key responses and outbound requests;
/// - `clock` dates key validity (invariant 12);
/// - `shutdown` stops the listener and the responder gracefully.
///
/// Returns once the socket is bound, so a port of 0 is resolved in
/// [`Started::local_addr`] and bind errors surface here, not in a task.
pub async fn start(
    config: Arc<Config>,
    db: Db,
    bus: Bus,
    signing_key: Arc<ServerSigningKey>,
    clock: SharedClock,
    shutdown: Shutdown,
) -> Result<Started, FederationError> {
    install_crypto_provider();
    let client = Arc::new(FederationClient::from_config(&config, signing_key.clone(), clock.clone())?);
    start_with_client(config, db, bus, signing_key, clock, client, shutdown).await
}

/// [`start`] with a given outbound client (tests give one with their own
/// resolver).
pub async fn start_with_client(
    config: Arc<Config>,
    db: Db,
    bus: Bus,
    signing_key: Arc<ServerSigningKey>,
    clock: SharedClock,
    client: Arc<FederationClient>,
    mut shutdown: Shutdown,
) -> Result<Started, FederationError> {
    install_crypto_provider();
    let settings = &config.federation_api;
    let tls = RustlsConfig::from_pem_file(&settings.tls_certificate_path, &settings.tls_private_key_path)
        .await
        .map_err(|source| FederationError::Tls {
            certificate: settings.tls_certificate_path.clone(),
            key: settings.tls_private_key_path.clone(),
            source,
        })?;
    db.migrate(COMPONENT, MIGRATIONS).await?;

    let addr = settings.listen;
    let bind = |source| FederationError::Bind { addr, source };
    let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;

    let server_name = OwnedServerName::try_from(config.global.server_name.as_str())
        .map_err(|_| FederationError::ServerName(config.global.server_name.clone()))?;
    let keys = Arc::new(KeyStore::new(&config, db.clone(), client.clone(), signing_key.clone(), clock.clone()));
    let performer = Arc::new(PerformResponder {
        client: client.clone(),
        bus: bus.clone(),
        clock: clock.clone(),
        server_name: server_name.clone(),
        signing_key,
    });
    let responder = Arc::new(QueryResponder { keys: keys.clone(), client: client.clone(), perform: performer.clone() });
    let query = watch(bus.serve(query::GROUP, FEDERATION_QUERY_TOPIC, responder, shutdown.clone()));
    let perform = watch(bus.serve(perform::GROUP, FEDERATION_PERFORM_TOPIC, performer, shutdown.clone()));
    let sender = Sender::new(db.clone(), client.clone(), clock.clone(), server_name.to_string(), shutdown.clone());
    sender.resume().await?;
    let edus = Arc::new(EduConsumer { db: db.clone(), server_name: server_name.to_string(), sender: sender.clone() });
    let typing = TypingConsumer(edus.clone());
    let typing = watch(bus.consume(edus::TYPING_GROUP, TYPING_TOPIC, Arc::new(typing), shutdown.clone()));
    let receipts = ReceiptConsumer(edus.clone());
    let receipts = watch(bus.consume(edus::RECEIPT_GROUP, RECEIPT_TOPIC, Arc::new(receipts), shutdown.clone()));
    let to_device = ToDeviceConsumer(edus.clone());
    let to_device = watch(bus.consume(edus::TO_DEVICE_GROUP, TO_DEVICE_TOPIC, Arc::new(to_device), shutdown.clone()));
    let presence = PresenceConsumer { edus, clock: clock.clone() };
    let presence = watch(bus.consume(edus::PRESENCE_GROUP, PRESENCE_TOPIC, Arc::new(presence), shutdown.clone()));
    let device_lists = DeviceListConsumer {
        db: db.clone(),
        bus: bus.clone(),
        server_name: server_name.to_string(),
        sender: sender.clone(),
    };
    let device_lists =
        watch(bus.consume(device_lists::GROUP, KEY_CHANGE_TOPIC, Arc::new(device_lists), shutdown.clone()));
    let remote_keys = RemoteKeysResponder { client: client.clone() };
    let remote_keys = watch(bus.serve(remote_keys::GROUP, REMOTE_KEYS_TOPIC, Arc::new(remote_keys), shutdown.clone()));
    let media = Arc::new(MediaStore::from_config(&config));
    let remote_media = RemoteMediaResponder { client: client.clone(), media: media.clone() };
    let remote_media =
        watch(bus.serve(remote_media::GROUP, REMOTE_MEDIA_TOPIC, Arc::new(remote_media), shutdown.clone()));
    let remote_profiles = RemoteProfileResponder { client: client.clone() };
    let remote_profiles =
        watch(bus.serve(remote_profiles::GROUP, REMOTE_PROFILE_TOPIC, Arc::new(remote_profiles), shutdown.clone()));
    let output = OutputConsumer { db: db.clone(), server_name: server_name.to_string(), sender: sender.clone() };
    let output = watch(bus.consume(roomserver_output::GROUP, OUTPUT_TOPIC, Arc::new(output), shutdown.clone()));

    let mut federation_state = FederationState::new(keys, db, bus, clock, sender, media);
    federation_state.allow_public_rooms = config.federation_api.allow_public_rooms_over_federation;
    let app = router(federation_state);
    let handle = Handle::new();
    let server = axum_server::from_tcp_rustls(listener, tls).handle(handle.clone());
    let serve = tokio::spawn(async move {
        let stopper = tokio::spawn(async move {
            shutdown.wait().await;
            handle.graceful_shutdown(Some(GRACE));
        });
        let result = server.serve(app.into_make_service()).await;
        stopper.abort();
        tracing::info!("federation listener stopped");
        result.map_err(|e| format!("federation listener failed: {e}"))
    });
    tracing::info!(%local_addr, "federation API listening on https://{local_addr}");
    let tasks = vec![
        serve,
        query,
        perform,
        remote_keys,
        remote_media,
        remote_profiles,
        typing,
        receipts,
        to_device,
        presence,
        device_lists,
        output,
    ];
    Ok(Started { local_addr, tasks, client })
}

/// A bus task as the supervisor watches it: its error, or its panic, as text.
fn watch(task: JoinHandle<Result<(), myelin_bus::BusError>>) -> JoinHandle<Result<(), String>> {
    tokio::spawn(async move {
        match task.await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(join) => Err(join.to_string()),
        }
    })
}
