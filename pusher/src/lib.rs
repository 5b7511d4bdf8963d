//! Push: each user's push rules (`/pushrules`) and pushers (`/pushers`),
//! evaluation of every new room event against them, notification counts
//! (`pusher.counts`, served by `/sync`), `/notifications`, and delivery to
//! push gateways.
//!
//! Push rules are stored per user (ruma's `Ruleset`, starting from the
//! server-default rules) and published as `m.push_rules` account data on
//! `clientapi.accountdata`, so `/sync` serves them; pushers are stored with
//! the access token that set them and removed when that token is revoked.
//! Who is notified is decided in `notify.rs` (DESIGN.md invariant 8), what
//! a gateway receives in `gating.rs` (invariant 9), and where requests may
//! go in `delivery/` (invariant 10).

pub mod api;
mod consumers;
mod delivery;
mod error;
mod gating;
mod metrics;
mod notify;
mod producers;
mod room_cache;
mod routing;
mod rules;
pub mod service;
mod storage;

pub use error::PusherError;
