//! The Client-Server API, except sync and push.
pub mod api;
