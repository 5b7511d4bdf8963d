//! The room server: the only writer of room state (DESIGN.md invariant 3).
pub mod api;
mod consumers;
mod error;
mod events;
mod producers;
pub mod service;
mod storage;

pub use error::RoomServerError;

/// The room server's checks and state resolution as pure functions over
/// events in memory (no storage, no bus): the code the input pipeline runs,
/// exposed for the fuzz targets (`fuzz/`) and the benchmarks (`benches/`).
pub mod checks {
    pub use crate::events::Signer;
    pub use crate::events::pdu::Pdu;
    pub use crate::events::receive::{Dropped, KeyRing, Parsed, Received, canonical, parse};
    pub use crate::events::remote::{IdState, allowed_by_auth_events, allowed_by_state, allowed_create, v12_create};
    pub use crate::events::resolve::{EventMap, ResolveError, resolve};
}
