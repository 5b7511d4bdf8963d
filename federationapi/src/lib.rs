//! The Server-Server API, inbound side: the TLS federation listener with the
//! version and key endpoints. Transactions, joins, backfill, key fetching and
//! the federation sender arrive with the federation work.
//!
//! Entry point: [`service::start`].

pub mod routing;
pub mod service;

pub use service::{FederationError, Started, install_crypto_provider, start};
