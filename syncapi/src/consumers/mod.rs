//! One consumer per upstream topic.

pub mod clientapi_accountdata;
pub mod clientapi_erased;
pub mod clientapi_forgotten;
pub mod clientapi_keychange;
pub mod edu_presence;
pub mod edu_receipt;
pub mod edu_todevice;
pub mod edu_typing;
pub mod pusher_counts;
pub mod roomserver_output;
