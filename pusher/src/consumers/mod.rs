//! One consumer per upstream topic.

pub mod clientapi_accountdata;
pub mod clientapi_devices;
pub mod edu_receipt;
pub mod roomserver_output;
