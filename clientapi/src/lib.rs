//! The Client-Server API, except sync and push: accounts (password changes,
//! deactivation), devices and access tokens, registration (open, and
//! Synapse's shared-secret admin API), login, capabilities, profiles,
//! account data and tags, typing and receipts, send-to-device, end-to-end
//! keys, the content repository (media, URL previews), and room commands
//! forwarded to the room server.
mod accounts;
pub mod api;
mod appservice;
mod auth;
mod consumers;
mod error;
mod json;
mod keys;
mod media;
mod power;
mod producers;
mod routing;
pub mod service;
mod storage;
mod thumbnail;
mod uia;
mod url_preview;

pub use error::ClientApiError;
