//! The pusher's errors and their single conversion into [`MatrixError`],
//! the only type that becomes an HTTP error body.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myelin_bus::BusError;
use myelin_clientapi::api::ResolveError;
use myelin_types::{ErrorCode, MatrixError};

#[derive(Debug, thiserror::Error)]
pub enum PusherError {
    /// An error the client is meant to see as is.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error("storage: {0}")]
    Storage(#[from] myelin_storage::StorageError),
    #[error("database: {0}")]
    Database(#[from] myelin_storage::sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("the configured server name {0:?} is not valid")]
    ServerName(String),
    /// The HTTP client for push gateways could not be built.
    #[error("push gateway client: {0}")]
    Http(String),
    /// Concurrent changes to one user's push rules kept winning the race.
    #[error("push rules of {0} changed concurrently too often")]
    Contended(String),
}

impl From<ResolveError> for PusherError {
    fn from(error: ResolveError) -> Self {
        match error {
            ResolveError::Matrix(error) => Self::Matrix(error),
            ResolveError::Bus(error) => Self::Bus(error),
        }
    }
}

impl From<PathRejection> for PusherError {
    fn from(rejection: PathRejection) -> Self {
        MatrixError::invalid_param(format!("Invalid path parameter: {}", rejection.body_text())).into()
    }
}

impl From<QueryRejection> for PusherError {
    fn from(rejection: QueryRejection) -> Self {
        MatrixError::invalid_param(format!("Invalid query parameter: {}", rejection.body_text())).into()
    }
}

impl From<PusherError> for MatrixError {
    fn from(error: PusherError) -> Self {
        match error {
            PusherError::Matrix(error) => error,
            PusherError::Bus(error) if error.is_busy() => {
                tracing::warn!(%error, "bus request failed; the server is busy");
                MatrixError::new(ErrorCode::Unknown, "The server is busy; try again later")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            other => {
                tracing::error!(error = %other, "pusher request failed");
                MatrixError::internal()
            }
        }
    }
}

impl IntoResponse for PusherError {
    fn into_response(self) -> Response {
        MatrixError::from(self).into_response()
    }
}
