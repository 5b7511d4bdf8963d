pub mod input;
pub mod query;
