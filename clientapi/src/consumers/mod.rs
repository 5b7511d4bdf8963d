//! Topics the client API reads.

pub mod aliases;
pub mod keys;
pub mod media;
pub mod openid;
pub mod profiles;
pub mod public_rooms;
pub mod query;
pub mod remote_todevice;
pub mod roomserver_output;
