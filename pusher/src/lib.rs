//! Push: each user's push rules (`/pushrules`) and pushers (`/pushers`).
//!
//! This first slice manages them only. Push rules are stored per user
//! (ruma's `Ruleset`, starting from the server-default rules) and published
//! as `m.push_rules` account data on `clientapi.accountdata`, so `/sync`
//! serves them; pushers are stored with the access token that set them and
//! removed when that token is revoked. Nothing is evaluated or delivered
//! yet: no notification counts, no `/notifications`, no request to any push
//! gateway (DESIGN.md invariants 8 and 9 apply when delivery lands).

pub mod api;
mod consumers;
mod error;
mod producers;
mod routing;
mod rules;
pub mod service;
mod storage;

pub use error::PusherError;
