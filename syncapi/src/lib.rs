//! The sync API: builds its own read model of rooms from `roomserver.output`,
//! of account data from `clientapi.accountdata`, of receipts and typing from
//! `edu.receipt` and `edu.typing`, and serves `/sync`, simplified sliding
//! sync, `/messages` and filters (ARCHITECTURE.md).

mod connections;
mod consumers;
mod error;
pub mod filter;
mod lazy_members;
mod notifier;
mod routing;
pub mod service;
mod storage;
pub mod token;
mod typing;
mod visibility;

pub use error::SyncApiError;
