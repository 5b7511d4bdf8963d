//! The federation API's typed errors and their one conversion to `MatrixError`.

use myelin_types::{ErrorCode, MatrixError};

use crate::keys::KeyError;
use crate::xmatrix::XMatrixError;

/// Why an inbound request was not authenticated.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#request-authentication>
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing X-Matrix authorization")]
    Missing,
    #[error("invalid X-Matrix authorization: {0}")]
    Malformed(#[from] XMatrixError),
    #[error("origin {0:?} is not a server name")]
    BadOrigin(String),
    #[error("request is addressed to {0:?}, not to this server")]
    WrongDestination(String),
    #[error("unknown or expired key {key_id} of {origin}")]
    UnknownKey { origin: String, key_id: String },
    #[error("the request body is not canonical JSON: {0}")]
    BadBody(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
}

impl From<AuthError> for MatrixError {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::BadBody(_) => MatrixError::bad_json(error.to_string()),
            AuthError::Keys(ref inner) => {
                tracing::error!(error = %inner, "key store failed during request authentication");
                MatrixError::internal()
            }
            _ => MatrixError::new(ErrorCode::Unauthorized, error.to_string()),
        }
    }
}

impl From<KeyError> for MatrixError {
    fn from(error: KeyError) -> Self {
        tracing::error!(%error, "key store failed");
        MatrixError::internal()
    }
}
