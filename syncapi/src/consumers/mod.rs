//! One consumer per upstream topic.

pub mod clientapi_devices;
pub mod roomserver_output;
