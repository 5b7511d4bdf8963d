//! The client API's failures, and their single conversion to [`MatrixError`].

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use myelin_bus::BusError;
use myelin_storage::{StorageError, sqlx};
use myelin_types::{ErrorCode, MatrixError};

#[derive(Debug, thiserror::Error)]
pub enum ClientApiError {
    /// What the client is told, as is (also errors relayed from the room server).
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("bus: {0}")]
    Bus(#[from] BusError),
    #[error("password hashing: {0}")]
    PasswordHash(String),
    #[error("background task: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("unexpected reply from {0}")]
    UnexpectedReply(&'static str),
    #[error("media store: {0}")]
    MediaStore(#[from] std::io::Error),
    #[error(transparent)]
    AppServices(#[from] crate::appservice::AppServiceError),
}

impl From<ClientApiError> for MatrixError {
    fn from(error: ClientApiError) -> Self {
        match error {
            ClientApiError::Matrix(error) => error,
            ClientApiError::Bus(error) if error.is_busy() => {
                tracing::warn!(%error, "bus request failed; the server is busy");
                MatrixError::new(ErrorCode::Unknown, "The server is busy; try again later")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            ClientApiError::Bus(BusError::Closed) => {
                MatrixError::new(ErrorCode::Unknown, "The server is shutting down")
                    .with_status(StatusCode::SERVICE_UNAVAILABLE)
            }
            other => {
                tracing::error!(error = %other, "internal error");
                MatrixError::internal()
            }
        }
    }
}

impl IntoResponse for ClientApiError {
    fn into_response(self) -> Response {
        MatrixError::from(self).into_response()
    }
}

impl From<PathRejection> for ClientApiError {
    fn from(rejection: PathRejection) -> Self {
        MatrixError::invalid_param(format!("Invalid path parameter: {}", rejection.body_text())).into()
    }
}

impl From<QueryRejection> for ClientApiError {
    fn from(rejection: QueryRejection) -> Self {
        MatrixError::invalid_param(format!("Invalid query parameter: {}", rejection.body_text())).into()
    }
}

/// A shorthand for handlers.
pub type Result<T, E = ClientApiError> = std::result::Result<T, E>;
