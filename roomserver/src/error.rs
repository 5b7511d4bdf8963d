//! The room server's errors and their single mapping to [`MatrixError`].

use myelin_bus::HandleError;
use myelin_types::{ErrorCode, MatrixError};

/// Why the room server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RoomServerError {
    #[error("storage: {0}")]
    Storage(#[from] myelin_storage::StorageError),
    #[error("signing key: {0}")]
    SigningKey(#[from] myelin_types::signing::SigningKeyError),
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("unsupported default room version {0:?}")]
    DefaultRoomVersion(String),
}

/// Why one request failed. Everything but [`RequestError::Database`] is the
/// request's own fault and becomes its reply; database failures are retried.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("room version {0} is not supported for new rooms")]
    UnsupportedRoomVersion(String),
    /// The room's version is not one the asking server supports.
    #[error("room version {0} is not supported by the joining server")]
    IncompatibleRoomVersion(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    InvalidParam(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// A restricted join this server cannot judge: it knows none of the allowed rooms.
    #[error("{0}")]
    UnableToAuthoriseJoin(String),
    /// A restricted join no user of this server can authorise.
    #[error("{0}")]
    UnableToGrantJoin(String),
    /// Another server refused what this request needed of it; its error
    /// goes to the caller.
    #[error("{0}")]
    Remote(MatrixError),
    #[error("database: {0}")]
    Database(#[from] myelin_storage::sqlx::Error),
    /// Our own data is inconsistent or signing failed: not the caller's fault.
    #[error("internal: {0}")]
    Internal(String),
}

impl RequestError {
    /// The reply a caller gets, or the bus-level failure for errors worth retrying.
    pub fn into_reply(self) -> Result<MatrixError, HandleError> {
        let (code, message) = match self {
            Self::Database(error) => return Err(HandleError::Transient(error.to_string())),
            Self::UnsupportedRoomVersion(_) => (ErrorCode::UnsupportedRoomVersion, self.to_string()),
            Self::IncompatibleRoomVersion(_) => (ErrorCode::IncompatibleRoomVersion, self.to_string()),
            Self::BadJson(m) => (ErrorCode::BadJson, m),
            Self::InvalidParam(m) => (ErrorCode::InvalidParam, m),
            Self::TooLarge(m) => (ErrorCode::TooLarge, m),
            Self::Forbidden(m) => (ErrorCode::Forbidden, m),
            Self::NotFound(m) => (ErrorCode::NotFound, m),
            Self::UnableToAuthoriseJoin(m) => (ErrorCode::UnableToAuthoriseJoin, m),
            Self::UnableToGrantJoin(m) => (ErrorCode::UnableToGrantJoin, m),
            Self::Remote(error) => return Ok(error),
            Self::Internal(m) => {
                tracing::error!(error = %m, "room server internal error");
                return Ok(MatrixError::internal());
            }
        };
        Ok(MatrixError::new(code, message))
    }
}

impl From<serde_json::Error> for RequestError {
    fn from(error: serde_json::Error) -> Self {
        Self::Internal(format!("stored JSON: {error}"))
    }
}
