//! What the client API sends on the bus: device records, account data and
//! EDUs, and requests to the room server and the federation API.

pub mod devices;
pub mod edu;
pub mod federation;
pub mod roomserver;
