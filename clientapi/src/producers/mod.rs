//! What the client API sends on the bus: device records, account data and
//! EDUs, and requests to the room server.

pub mod devices;
pub mod edu;
pub mod roomserver;
