//! The server's configuration: one YAML file with a section per component,
//! any key overridable from the environment as `MYELIN_<SECTION>__<KEY>`.
//!
//! [`Config::load`] reads and overrides ([`load`]), [`Config::check`]
//! validates meaning ([`check`]). Both report every problem at once: an
//! operator fixing a config file should not have to restart once per typo.

pub mod appservice;
mod check;
mod load;

pub use check::check_server_name;
pub use load::{ConfigErrors, ENV_PREFIX};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
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
    /// Partitions per topic (embedded bus, and topics the Kafka bus creates);
    /// bounds room-server parallelism and how many instances share the rooms.
    pub bus_partitions: u32,
    /// Kafka bootstrap servers (`host:port,host:port`), for `bus: kafka`.
    pub kafka_brokers: String,
    /// Replication factor of topics the Kafka bus creates; -1 lets the
    /// cluster's `default.replication.factor` decide.
    pub kafka_replication: i32,
    /// Where generated files live (signing key, certificates, SQLite).
    pub data_dir: PathBuf,
    /// `ed25519 <version> <base64 seed>`, as Synapse writes it.
    pub signing_key_path: PathBuf,
    /// A `tracing` filter such as `info` or `myelin_roomserver=debug,info`. The
    /// default quiets ruma's per-event auth traces.
    pub log_filter: String,
    /// Application service registration files (YAML, as Synapse reads
    /// them); none by default.
    pub app_service_config_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientApi {
    pub listen: SocketAddr,
    /// Enables Synapse-compatible `/_synapse/admin/v1/register`.
    pub registration_shared_secret: Option<String>,
    /// Lets anyone register with `m.login.dummy`. Off unless enabled.
    pub open_registration: bool,
    /// With `open_registration`, registration needs a token a server admin
    /// created (`/_synapse/admin/v1/registration_tokens`): the UIA stage is
    /// `m.login.registration_token` instead of `m.login.dummy`.
    pub registration_requires_token: bool,
    /// Lets anyone register a guest account (`POST /register?kind=guest`),
    /// which may call only the endpoints the spec opens to guests and join
    /// only rooms whose `m.room.guest_access` is `can_join`. Off unless enabled.
    pub allow_guest_access: bool,
    /// Serves the public room directory (`/publicRooms`) to clients without
    /// an access token. Off unless enabled (DESIGN.md invariant 11).
    pub public_room_directory_without_auth: bool,
    /// Largest media upload, in bytes (`m.upload.size`).
    pub max_upload_size: u64,
    /// Lifetime of an access token issued with a refresh token (a client
    /// that sent `refresh_token: true`), in milliseconds.
    pub refreshable_access_token_lifetime_ms: u64,
    /// Where uploaded media is stored; `None`: `media` under `global.data_dir`.
    pub media_path: Option<PathBuf>,
    /// How many `mxc://` URIs a user may hold from `POST /media/v1/create`
    /// without having uploaded their content yet (5, as Synapse's option of
    /// that name); one more is `429 M_LIMIT_EXCEEDED`.
    pub max_pending_media_uploads: u64,
    /// Serves URL previews (`/media/preview_url`): the server then fetches
    /// pages and images that users name. Off unless enabled (privacy, and
    /// the server making requests on users' behalf); off, the endpoint
    /// answers `404 M_UNRECOGNIZED`.
    pub url_preview_enabled: bool,
    /// Address ranges (CIDRs such as `10.1.0.0/16`) URL previews may reach
    /// although they are not public (loopback, private, link-local, …).
    /// Empty by default: previews reach only public addresses.
    pub url_preview_ip_allowlist: Vec<IpNet>,
    /// TURN servers for VoIP calls, handed out by `/voip/turnServer` (for
    /// example `turn:turn.example.com:3478?transport=udp`); none by default.
    pub turn_uris: Vec<String>,
    /// The TURN server's shared secret (coturn's `static-auth-secret`):
    /// each user gets credentials derived from it that expire.
    pub turn_shared_secret: Option<String>,
    /// How long TURN credentials stay valid, in seconds.
    pub turn_user_lifetime_secs: u64,
    /// Lets a logged-in client mint a one-time login token for another
    /// device (`/login/get_token`, `m.login.token`), as QR-code sign-in
    /// does. Off unless enabled: whoever holds such a token is logged in.
    pub login_via_existing_session: bool,
    /// The client API's public URL (`https://matrix.example.com`), served at
    /// `/.well-known/matrix/client` so that clients find it from the server
    /// name. Unset: that document answers 404.
    pub public_base_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationApi {
    pub listen: SocketAddr,
    pub tls_certificate_path: PathBuf,
    pub tls_private_key_path: PathBuf,
    /// PEM certificates trusted for outbound federation besides the system
    /// roots (a private CA, or SyTest's).
    pub ca_file: Option<PathBuf>,
    /// Lets outbound federation reach loopback addresses. Tests only: a
    /// server name resolving to 127.0.0.1 is otherwise refused.
    pub allow_loopback_peers: bool,
    /// Lets outbound federation reach private ranges (10/8, 192.168/16,
    /// fc00::/7, …), for homeservers federating on one private network.
    pub allow_private_peers: bool,
    /// Notary servers asked (`POST /_matrix/key/v2/query`) for a server's
    /// keys when the server itself cannot be reached. Empty: none.
    pub trusted_key_servers: Vec<String>,
    /// Public keys (unpadded base64) never trusted, whoever publishes them.
    pub key_denylist: Vec<String>,
    /// Keys this server signed with before, published as `old_verify_keys`
    /// so events they signed stay verifiable. Keyed by key id (`ed25519:…`).
    pub old_verify_keys: BTreeMap<String, OldVerifyKey>,
    /// Lists this server's public room directory to other servers
    /// (`/_matrix/federation/v1/publicRooms`). Off by default: the
    /// directory stays private to this server's users (DESIGN.md
    /// invariant 11), and other servers are refused with `403 M_FORBIDDEN`.
    pub allow_public_rooms_over_federation: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldVerifyKey {
    /// Unpadded base64 public key.
    pub key: String,
    /// When it stopped being used (ms since the epoch).
    pub expired_ts: u64,
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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pusher {
    /// The most a push gateway is told about an event (DESIGN.md invariant
    /// 9); a pusher's own `format` and encrypted rooms can only lower it.
    pub content: PushContent,
    /// Lets push gateway requests reach loopback and private addresses.
    /// Tests and single-network deployments only: gateway URLs come from
    /// users, so by default they may not point inside the server's network.
    pub allow_private_gateways: bool,
    /// How long a notification is retried (with exponential backoff) before
    /// it is dropped, in seconds; also the oldest an event may be and still
    /// be pushed (older ones are only counted).
    pub give_up_after_secs: u64,
    /// How long one push gateway request may take before it counts as
    /// failed, in seconds. A request in flight holds its notification for
    /// twice this long, so after a crash that notification waits that long
    /// before it is sent again.
    pub gateway_timeout_secs: u64,
}

/// How much of an event a push gateway receives, least first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PushContent {
    /// Only the counts (and devices, priority): the app wakes and fetches.
    None,
    /// The event and room ids besides the counts.
    EventIdOnly,
    /// Everything but the event's `content`.
    Metadata,
    /// The spec's whole notification, `content` included.
    Full,
}

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
            kafka_brokers: String::new(),
            kafka_replication: -1,
            signing_key_path: data_dir.join("signing.key"),
            log_filter: "info,ruma_state_res=warn".to_owned(),
            app_service_config_files: Vec::new(),
            data_dir,
        }
    }
}

impl Default for ClientApi {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8008).into(),
            registration_shared_secret: None,
            open_registration: false,
            registration_requires_token: false,
            allow_guest_access: false,
            public_room_directory_without_auth: false,
            max_upload_size: 50 * 1024 * 1024,
            refreshable_access_token_lifetime_ms: 5 * 60 * 1000,
            media_path: None,
            max_pending_media_uploads: 5,
            url_preview_enabled: false,
            url_preview_ip_allowlist: Vec::new(),
            turn_uris: Vec::new(),
            turn_shared_secret: None,
            turn_user_lifetime_secs: 24 * 60 * 60,
            login_via_existing_session: false,
            public_base_url: None,
        }
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
            ca_file: None,
            allow_loopback_peers: false,
            allow_private_peers: false,
            allow_public_rooms_over_federation: false,
            trusted_key_servers: Vec::new(),
            key_denylist: Vec::new(),
            old_verify_keys: BTreeMap::new(),
        }
    }
}

impl Default for Pusher {
    fn default() -> Self {
        Self {
            content: PushContent::Full,
            allow_private_gateways: false,
            give_up_after_secs: 24 * 60 * 60,
            gateway_timeout_secs: 30,
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
