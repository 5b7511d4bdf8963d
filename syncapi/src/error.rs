//! The sync API's errors and their single conversion into [`MatrixError`],
//! the only type that becomes an HTTP error body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myelin_types::{ErrorCode, MatrixError};

#[derive(Debug, thiserror::Error)]
pub enum SyncApiError {
    /// An error the client is meant to see as is.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error("storage: {0}")]
    Storage(#[from] myelin_storage::StorageError),
    #[error("database: {0}")]
    Sqlx(#[from] myelin_storage::sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] myelin_bus::BusError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl From<myelin_clientapi::api::ResolveError> for SyncApiError {
    fn from(error: myelin_clientapi::api::ResolveError) -> Self {
        match error {
            myelin_clientapi::api::ResolveError::Matrix(error) => Self::Matrix(error),
            myelin_clientapi::api::ResolveError::Bus(error) => Self::Bus(error),
        }
    }
}

impl From<SyncApiError> for MatrixError {
    fn from(error: SyncApiError) -> Self {
        match error {
            SyncApiError::Matrix(error) => error,
            SyncApiError::Bus(error) if error.is_busy() => {
                tracing::warn!(%error, "bus request failed; the server is busy");
                MatrixError::new(ErrorCode::Unknown, "The server is busy; try again later")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            other => {
                tracing::error!(error = %other, "sync API request failed");
                MatrixError::internal()
            }
        }
    }
}

impl IntoResponse for SyncApiError {
    fn into_response(self) -> Response {
        MatrixError::from(self).into_response()
    }
}
