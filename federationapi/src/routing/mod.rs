//! HTTP handlers of the federation listener, one file per endpoint family.

pub mod auth;
mod directory;
mod edus;
mod join;
mod keys;
mod send;
mod version;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use myelin_bus::Bus;
use myelin_storage::Db;
use myelin_types::MatrixError;
use myelin_types::body::read_body_first;
use myelin_types::clock::SharedClock;

use crate::keys::KeyStore;

/// What the handlers need.
#[derive(Clone)]
pub struct FederationState {
    pub keys: Arc<KeyStore>,
    pub db: Db,
    pub bus: Bus,
    pub clock: SharedClock,
    /// One lock per origin server, so its transactions are handled one at a time.
    transactions: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

impl FederationState {
    pub fn new(keys: Arc<KeyStore>, db: Db, bus: Bus, clock: SharedClock) -> Self {
        Self { keys, db, bus, clock, transactions: Arc::default() }
    }

    fn transaction_gate(&self, origin: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.transactions.lock().expect("transaction gate lock").entry(origin.to_owned()).or_default().clone()
    }
}

/// The federation router. Unknown paths and wrong methods answer with
/// `M_UNRECOGNIZED` JSON, as the spec asks of every Matrix endpoint.
/// Largest request body: a full transaction (50 PDUs of at most 64 KiB,
/// 100 EDUs) with room to spare.
const BODY_LIMIT: usize = 8 * 1024 * 1024;

pub fn router(state: FederationState) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version::get_version))
        .route("/_matrix/federation/v1/send/{txn_id}", put(send::put_send))
        .route("/_matrix/federation/v1/make_join/{room_id}/{user_id}", get(join::make_join))
        .route("/_matrix/federation/v1/send_join/{room_id}/{event_id}", put(join::send_join_v1))
        .route("/_matrix/federation/v2/send_join/{room_id}/{event_id}", put(join::send_join_v2))
        .route("/_matrix/federation/v1/query/directory", get(directory::query_directory))
        .route("/_matrix/key/v2/server", get(keys::get_server_keys))
        // Deprecated form with a key id, still requested by older servers;
        // the answer is the same (all current keys).
        .route("/_matrix/key/v2/server/{key_id}", get(keys::get_server_keys))
        .route("/_matrix/key/v2/query", post(keys::post_query))
        .route("/_matrix/key/v2/query/{server_name}", get(keys::get_query))
        .route("/_matrix/key/v2/query/{server_name}/{key_id}", get(keys::get_query_key))
        .method_not_allowed_fallback(|| async {
            MatrixError::unrecognized().with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .fallback(|| async { MatrixError::unrecognized() })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(BODY_LIMIT, read_body_first))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(myelin_observe::metrics_layer())
}
