//! What the client API sends on the bus: device records, and requests to
//! the room server.

pub mod devices;
pub mod roomserver;
