//! Topics the client API reads.

pub mod query;
pub mod roomserver_output;
