use axum::Json;
use axum::extract::State;
use myelin_types::MatrixError;
use myelin_types::ruma::CanonicalJsonObject;
use myelin_types::ruma::canonical_json::to_canonical_value;
use myelin_types::ruma::signatures::sign_json;
use serde_json::json;

use super::FederationState;

/// How long other servers may cache our key response. Synapse and Dendrite
/// advertise days, not hours, so a restart does not force refetches.
const VALIDITY_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// GET /_matrix/key/v2/server
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2server>
pub(super) async fn get_server_keys(
    State(state): State<FederationState>,
) -> Result<Json<CanonicalJsonObject>, MatrixError> {
    server_keys(&state).map(Json)
}

/// The key response, signed by the key it publishes (canonical JSON without
/// `signatures` and `unsigned`, as the spec's signing algorithm says).
pub fn server_keys(state: &FederationState) -> Result<CanonicalJsonObject, MatrixError> {
    let key = &state.signing_key;
    let response = json!({
        "server_name": state.server_name,
        "verify_keys": { key.key_id(): { "key": key.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": state.clock.now_ms() + VALIDITY_MS,
    });
    let mut object = match to_canonical_value(response) {
        Ok(myelin_types::ruma::CanonicalJsonValue::Object(object)) => object,
        other => {
            tracing::error!(?other, "key response is not a canonical JSON object");
            return Err(MatrixError::internal());
        }
    };
    sign_json(&state.server_name, &key.keypair, &mut object).map_err(|e| {
        tracing::error!(error = %e, "signing the key response failed");
        MatrixError::internal()
    })?;
    Ok(object)
}
