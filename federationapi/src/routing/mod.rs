//! HTTP handlers of the federation listener, one file per endpoint family.

mod keys;
mod version;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use myelin_types::MatrixError;
use myelin_types::clock::SharedClock;
use myelin_types::signing::ServerSigningKey;

/// What the handlers need: who we are, how we sign, what time it is.
#[derive(Clone)]
pub struct FederationState {
    pub server_name: String,
    pub signing_key: Arc<ServerSigningKey>,
    pub clock: SharedClock,
}

/// The federation router. Unknown paths and wrong methods answer with
/// `M_UNRECOGNIZED` JSON, as the spec asks of every Matrix endpoint.
pub fn router(state: FederationState) -> Router {
    Router::new()
        .route("/_matrix/federation/v1/version", get(version::get_version))
        .route("/_matrix/key/v2/server", get(keys::get_server_keys))
        // Deprecated form with a key id, still requested by older servers;
        // the answer is the same (all current keys).
        .route("/_matrix/key/v2/server/{key_id}", get(keys::get_server_keys))
        .method_not_allowed_fallback(|| async {
            MatrixError::unrecognized().with_status(StatusCode::METHOD_NOT_ALLOWED)
        })
        .fallback(|| async { MatrixError::unrecognized() })
        .with_state(state)
        .layer(myelin_observe::metrics_layer())
}
