//! Lifecycle of the client API: migrate its tables, answer token queries
//! on `clientapi.query`, local alias lookups on `clientapi.aliases`, profiles on
//! `clientapi.profiles`, local users' end-to-end keys on `clientapi.keys`, OpenID tokens on
//! `clientapi.openid`, uploads' metadata on `clientapi.media` and pages of the public room
//! directory on `clientapi.publicrooms`, keep the directory's room summaries from
//! `roomserver.output` (and make guests leave rooms that stop admitting
//! them), expand to-device messages from other servers
//! (`federationapi.todevice`), and hand the HTTP router to the binary.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_config::Config;
use myelin_storage::Db;
use tokio::task::JoinHandle;

use crate::api::{
    ALIAS_QUERY_TOPIC, LOCAL_KEYS_TOPIC, MEDIA_QUERY_TOPIC, OPENID_QUERY_TOPIC, PROFILE_QUERY_TOPIC,
    PUBLIC_ROOMS_TOPIC, QUERY_TOPIC, REMOTE_TO_DEVICE_TOPIC,
};
use crate::appservice::AppServices;
use crate::consumers::aliases::{self, AliasResponder};
use crate::consumers::keys::{self, KeysResponder};
use crate::consumers::media::{self as media_query, MediaResponder};
use crate::consumers::openid::{self, OpenIdResponder};
use crate::consumers::profiles::{self, ProfileResponder};
use crate::consumers::public_rooms::{self, PublicRoomsResponder};
use crate::consumers::query::QueryResponder;
use crate::consumers::remote_todevice::{self, RemoteToDeviceConsumer};
use crate::consumers::roomserver_output::DirectoryConsumer;
use crate::error::ClientApiError;
use crate::media::MediaStore;
use crate::{routing, storage};

/// Consumer group of the directory's room summaries.
pub const DIRECTORY_GROUP: &str = "clientapi.directory";

/// What the binary runs: the router (without fallback, metrics or body
/// limit, which the binary adds) and the background tasks.
pub struct Started {
    pub router: axum::Router,
    /// The content repository's routes, which carry the upload limit as
    /// their own body limit.
    pub media_router: axum::Router,
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

/// Everything a request handler needs.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
    pub bus: Bus,
    pub media: Arc<MediaStore>,
    pub app_services: Arc<AppServices>,
}

impl AppState {
    /// Milliseconds since the epoch, from the bus's (settable) clock.
    pub fn now_ms(&self) -> i64 {
        i64::try_from(self.bus.clock().now_ms()).unwrap_or(i64::MAX)
    }

    pub fn server_name(&self) -> &str {
        &self.config.global.server_name
    }
}

pub async fn start(config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, ClientApiError> {
    db.migrate(storage::COMPONENT, storage::MIGRATIONS).await?;
    let now_ms = i64::try_from(bus.clock().now_ms()).unwrap_or(i64::MAX);
    let app_services = Arc::new(AppServices::load(&config, &db, now_ms).await?);
    let query = bus.serve(
        "clientapi.query",
        QUERY_TOPIC,
        Arc::new(QueryResponder { db: db.clone(), app_services: app_services.clone() }),
        shutdown.clone(),
    );
    let aliases = bus.serve(
        aliases::GROUP,
        ALIAS_QUERY_TOPIC,
        Arc::new(AliasResponder { db: db.clone(), app_services: app_services.clone() }),
        shutdown.clone(),
    );
    let profiles = bus.serve(
        profiles::GROUP,
        PROFILE_QUERY_TOPIC,
        Arc::new(ProfileResponder { db: db.clone() }),
        shutdown.clone(),
    );
    let keys = bus.serve(
        keys::GROUP,
        LOCAL_KEYS_TOPIC,
        Arc::new(KeysResponder { db: db.clone(), bus: bus.clone() }),
        shutdown.clone(),
    );
    let openid = bus.serve(
        openid::GROUP,
        OPENID_QUERY_TOPIC,
        Arc::new(OpenIdResponder { db: db.clone(), bus: bus.clone() }),
        shutdown.clone(),
    );
    let media_query =
        bus.serve(media_query::GROUP, MEDIA_QUERY_TOPIC, Arc::new(MediaResponder { db: db.clone() }), shutdown.clone());
    let public_rooms = bus.serve(
        public_rooms::GROUP,
        PUBLIC_ROOMS_TOPIC,
        Arc::new(PublicRoomsResponder { db: db.clone() }),
        shutdown.clone(),
    );
    let directory = bus.consume(
        DIRECTORY_GROUP,
        myelin_roomserver::api::OUTPUT_TOPIC,
        Arc::new(DirectoryConsumer {
            db: db.clone(),
            bus: bus.clone(),
            server_name: config.global.server_name.clone(),
        }),
        shutdown.clone(),
    );
    let remote_to_device = bus.consume(
        remote_todevice::GROUP,
        REMOTE_TO_DEVICE_TOPIC,
        Arc::new(RemoteToDeviceConsumer { db: db.clone(), bus: bus.clone() }),
        shutdown,
    );
    let media = Arc::new(MediaStore::from_config(&config));
    let state = AppState { config, db, bus, media, app_services };
    Ok(Started {
        router: routing::router(state.clone()),
        media_router: routing::media::router(state),
        tasks: vec![query, aliases, profiles, keys, openid, media_query, public_rooms, directory, remote_to_device],
    })
}
