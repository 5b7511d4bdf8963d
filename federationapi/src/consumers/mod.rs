//! Requests the federation API answers on the bus.

pub mod query;
