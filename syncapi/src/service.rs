//! Lifecycle of the sync API: migrate its tables, start its consumers,
//! hand back its router.

use std::sync::Arc;

use myelin_bus::{Bus, BusError, Shutdown};
use myelin_clientapi::api::{EvictRevokedTokens, TokenResolver};
use myelin_config::Config;
use myelin_storage::Db;
use tokio::task::JoinHandle;

use crate::SyncApiError;
use crate::consumers::clientapi_accountdata::AccountDataConsumer;
use crate::consumers::clientapi_erased::ErasedConsumer;
use crate::consumers::clientapi_forgotten::ForgottenConsumer;
use crate::consumers::clientapi_keychange::KeyChangeConsumer;
use crate::consumers::edu_presence::PresenceConsumer;
use crate::consumers::edu_receipt::ReceiptConsumer;
use crate::consumers::edu_todevice::ToDeviceConsumer;
use crate::consumers::edu_typing::TypingConsumer;
use crate::consumers::pusher_counts::CountsConsumer;
use crate::consumers::roomserver_output::OutputConsumer;
use crate::notifier::Notifier;
use crate::routing::{AppState, router};
use crate::storage::Storage;
use crate::token::SyncToken;
use crate::typing::Typing;

/// Consumer group of the room read model.
pub const OUTPUT_GROUP: &str = "syncapi";
/// Consumer group of the token cache eviction.
pub const DEVICES_GROUP: &str = "syncapi.devices";
/// Consumer group of the account data read model.
pub const ACCOUNT_DATA_GROUP: &str = "syncapi.accountdata";
/// Consumer group of the in-memory typing state.
pub const TYPING_GROUP: &str = "syncapi.typing";
/// Consumer group of the receipts read model.
pub const RECEIPT_GROUP: &str = "syncapi.receipt";
/// Consumer group of the to-device inboxes.
pub const TO_DEVICE_GROUP: &str = "syncapi.todevice";
/// Consumer group of key counts and device list changes.
pub const KEY_CHANGE_GROUP: &str = "syncapi.keychange";
/// Consumer group of other servers' users' presence.
pub const PRESENCE_GROUP: &str = "syncapi.presence";

/// Consumer group of the forgotten rooms.
pub const FORGOTTEN_GROUP: &str = "syncapi.forgotten";
/// Consumer group of the erased accounts.
pub const ERASED_GROUP: &str = "syncapi.erased";
/// Consumer group of the notification counts.
pub const COUNTS_GROUP: &str = "syncapi.counts";

pub struct Started {
    pub router: axum::Router,
    pub tasks: Vec<JoinHandle<Result<(), BusError>>>,
}

pub async fn start(config: Arc<Config>, db: Db, bus: Bus, shutdown: Shutdown) -> Result<Started, SyncApiError> {
    let storage = Arc::new(Storage::open(db).await?);
    let start = SyncToken {
        events: storage.max_pos().await?,
        account_data: storage.max_account_data_pos().await?,
        typing: 0,
        receipts: storage.max_receipt_pos().await?,
        to_device: storage.max_to_device_pos().await?,
        device_lists: storage.max_device_list_pos().await?,
        presence: storage.max_presence_pos().await?,
    };
    let notifier = Arc::new(Notifier::new(start));
    let auth = Arc::new(TokenResolver::with_guests(bus.clone(), config.client_api.allow_guest_access));
    let typing = Arc::new(Typing::default());
    let clock = bus.clock().clone();
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
            Arc::new(EvictRevokedTokens(auth.clone())),
            shutdown.clone(),
        ),
        bus.consume(
            ACCOUNT_DATA_GROUP,
            myelin_clientapi::api::ACCOUNT_DATA_TOPIC,
            Arc::new(AccountDataConsumer { storage: storage.clone(), notifier: notifier.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            TYPING_GROUP,
            myelin_clientapi::api::TYPING_TOPIC,
            Arc::new(TypingConsumer {
                typing: typing.clone(),
                storage: storage.clone(),
                notifier: notifier.clone(),
                clock: clock.clone(),
            }),
            shutdown.clone(),
        ),
        bus.consume(
            RECEIPT_GROUP,
            myelin_clientapi::api::RECEIPT_TOPIC,
            Arc::new(ReceiptConsumer { storage: storage.clone(), notifier: notifier.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            TO_DEVICE_GROUP,
            myelin_clientapi::api::TO_DEVICE_TOPIC,
            Arc::new(ToDeviceConsumer {
                storage: storage.clone(),
                notifier: notifier.clone(),
                server_name: config.global.server_name.clone(),
            }),
            shutdown.clone(),
        ),
        bus.consume(
            KEY_CHANGE_GROUP,
            myelin_clientapi::api::KEY_CHANGE_TOPIC,
            Arc::new(KeyChangeConsumer { storage: storage.clone(), notifier: notifier.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            PRESENCE_GROUP,
            myelin_clientapi::api::PRESENCE_TOPIC,
            Arc::new(PresenceConsumer {
                storage: storage.clone(),
                notifier: notifier.clone(),
                server_name: config.global.server_name.clone(),
            }),
            shutdown.clone(),
        ),
        bus.consume(
            FORGOTTEN_GROUP,
            myelin_clientapi::api::FORGOTTEN_TOPIC,
            Arc::new(ForgottenConsumer { storage: storage.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            ERASED_GROUP,
            myelin_clientapi::api::ERASED_TOPIC,
            Arc::new(ErasedConsumer { storage: storage.clone() }),
            shutdown.clone(),
        ),
        bus.consume(
            COUNTS_GROUP,
            myelin_pusher::api::COUNTS_TOPIC,
            Arc::new(CountsConsumer { storage: storage.clone() }),
            shutdown,
        ),
    ];
    Ok(Started {
        router: router(AppState {
            storage,
            notifier,
            auth,
            typing,
            clock,
            bus,
            sliding: Arc::default(),
            lazy_members: Arc::default(),
        }),
        tasks,
    })
}
