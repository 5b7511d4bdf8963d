//! The component's errors. None reaches a client: it serves no HTTP.

use myelin_bus::HandleError;

#[derive(Debug, thiserror::Error)]
pub enum AppServiceError {
    /// A registration file could not be loaded.
    #[error("application service registrations: {0}")]
    Config(String),
    #[error("the configured server name {0:?} is not valid")]
    ServerName(String),
    #[error("storage: {0}")]
    Storage(#[from] myelin_storage::StorageError),
    #[error("database: {0}")]
    Database(#[from] myelin_storage::sqlx::Error),
    /// A record or stored row that can never be read.
    #[error("corrupt: {0}")]
    Corrupt(String),
    /// A transaction the service did not acknowledge (unreachable, or an
    /// answer other than 2xx).
    #[error("delivery: {0}")]
    Delivery(String),
    /// The HTTP client for the services could not be built.
    #[error("application service client: {0}")]
    Http(String),
}

impl From<AppServiceError> for HandleError {
    fn from(error: AppServiceError) -> Self {
        match error {
            AppServiceError::Corrupt(reason) => HandleError::Poison(reason),
            other => HandleError::Transient(other.to_string()),
        }
    }
}
