//! The room server: the only writer of room state (DESIGN.md invariant 3).
pub mod api;
mod consumers;
mod error;
mod events;
mod producers;
pub mod service;
mod storage;

pub use error::RoomServerError;
