//! The Server-Server API: the TLS federation listener (version, keys and
//! notary, transactions, joins), X-Matrix authentication both ways, the key
//! store, the outbound client with server discovery, the answers to the
//! room server's `federationapi.query` requests, joins through other
//! servers for the client API (`federationapi.perform`), and the sender.
//!
//! Entry point: [`service::start`].

pub mod client;
pub mod consumers;
pub mod error;
pub mod keys;
pub mod multipart;
pub mod routing;
pub mod sender;
pub mod service;
pub mod storage;
pub mod xmatrix;

pub use service::{FederationError, Started, install_crypto_provider, start, start_with_client};
