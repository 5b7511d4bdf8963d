//! One consumer per upstream topic.

pub mod clientapi_devices;
