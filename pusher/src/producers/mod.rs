//! Records the pusher publishes, after the change they describe is committed.

pub mod account_data;
pub mod counts;
