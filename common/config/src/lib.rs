//! The server's configuration: one YAML file with a section per component,
//! any key overridable from the environment as `MYELIN_<SECTION>__<KEY>`.
//!
//! [`Config::load`] reads and overrides ([`load`]), [`Config::check`]
//! validates meaning ([`check`]). Both report every problem at once: an
//! operator fixing a config file should not have to restart once per typo.

mod check;
mod load;

pub use check::check_server_name;
pub use load::{ConfigErrors, ENV_PREFIX};

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub global: Global,
    pub client_api: ClientApi,
    pub federation_api: FederationApi,
    pub roomserver: RoomServer,
    pub sync_api: SyncApi,
    pub pusher: Pusher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BusKind {
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Global {
    /// The name in user ids and room aliases; may carry a port (`example.org:8448`).
    pub server_name: String,
    /// `sqlite://PATH` or `postgres://…`.
    pub database_url: String,
    pub bus: BusKind,
    /// Partitions per topic of the embedded bus; bounds room-server parallelism.
    pub bus_partitions: u32,
    /// Where generated files live (signing key, certificates, SQLite).
    pub data_dir: PathBuf,
    /// `ed25519 <version> <base64 seed>`, as Synapse writes it.
    pub signing_key_path: PathBuf,
    /// A `tracing` filter such as `info` or `myelin_roomserver=debug,info`.
    pub log_filter: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientApi {
    pub listen: SocketAddr,
    /// Enables Synapse-compatible `/_synapse/admin/v1/register`.
    pub registration_shared_secret: Option<String>,
    /// Lets anyone register with `m.login.dummy`. Off unless enabled.
    pub open_registration: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationApi {
    pub listen: SocketAddr,
    pub tls_certificate_path: PathBuf,
    pub tls_private_key_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomServer {
    /// Version of rooms created without an explicit `room_version`.
    pub default_room_version: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyncApi {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pusher {}

pub const DEFAULT_DATA_DIR: &str = "./myelin-data";

impl Default for Global {
    fn default() -> Self {
        Self::in_dir(PathBuf::from(DEFAULT_DATA_DIR))
    }
}

impl Global {
    /// The embedded default with every file under `data_dir`.
    pub fn in_dir(data_dir: PathBuf) -> Self {
        Self {
            server_name: "localhost".to_owned(),
            database_url: format!("sqlite://{}", data_dir.join("myelin.db").display()),
            bus: BusKind::Embedded,
            bus_partitions: 8,
            signing_key_path: data_dir.join("signing.key"),
            log_filter: "info".to_owned(),
            data_dir,
        }
    }
}

impl Default for ClientApi {
    fn default() -> Self {
        Self { listen: ([127, 0, 0, 1], 8008).into(), registration_shared_secret: None, open_registration: false }
    }
}

impl Default for FederationApi {
    fn default() -> Self {
        Self::in_dir(PathBuf::from(DEFAULT_DATA_DIR))
    }
}

impl FederationApi {
    pub fn in_dir(data_dir: PathBuf) -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8448).into(),
            tls_certificate_path: data_dir.join("tls.crt"),
            tls_private_key_path: data_dir.join("tls.key"),
        }
    }
}

impl Default for RoomServer {
    fn default() -> Self {
        Self { default_room_version: "12".to_owned() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::in_dir(PathBuf::from(DEFAULT_DATA_DIR))
    }
}

impl Config {
    /// The embedded default (SQLite, embedded bus) rooted at `data_dir`.
    pub fn in_dir(data_dir: PathBuf) -> Self {
        Self {
            global: Global::in_dir(data_dir.clone()),
            client_api: ClientApi::default(),
            federation_api: FederationApi::in_dir(data_dir),
            roomserver: RoomServer::default(),
            sync_api: SyncApi::default(),
            pusher: Pusher::default(),
        }
    }
}
