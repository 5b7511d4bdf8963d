//! The sync API: builds its own read model of rooms from `roomserver.output`
//! and serves `/sync`, `/messages` and filters (ARCHITECTURE.md).

mod auth;
mod consumers;
mod error;
pub mod filter;
mod notifier;
mod routing;
pub mod service;
mod storage;
pub mod token;

pub use error::SyncApiError;
