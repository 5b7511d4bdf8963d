//! Topics the client API reads.

pub mod query;
