//! Building, signing and auth-checking local events, and the room-creation
//! recipe. Everything that decides whether an event enters a room lives here.

#[cfg(test)]
mod auth_rules_tests;
mod build;
pub mod chain;
pub mod cover;
pub mod create_room;
pub(crate) mod pdu;
pub mod receive;
pub mod remote;
pub(crate) mod resolve;
mod resolve_v1;
mod room;
pub mod stripped;
pub mod upgrade;

use myelin_types::signing::ServerSigningKey;
use ruma::OwnedServerName;

pub use build::Built;
pub use room::{Accepted, LocalEvent, Room};

/// Who signs the events this server builds.
pub struct Signer {
    pub server_name: OwnedServerName,
    pub key: ServerSigningKey,
}
