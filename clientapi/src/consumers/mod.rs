//! Topics the client API reads.

pub mod aliases;
pub mod profiles;
pub mod query;
pub mod roomserver_output;
