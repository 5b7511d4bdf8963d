//! What the pusher publishes. It has no topic of its own yet: its one
//! output is the `m.push_rules` account data entry, published on the client
//! API's `clientapi.accountdata` topic (as an
//! [`AccountDataUpdate`](myelin_clientapi::api::AccountDataUpdate)) so that
//! the sync API serves it like any other account data. The client API
//! refuses client writes of that type, so the pusher is its only writer.

/// The account data type that carries a user's push rules, with content
/// `{"global": <ruleset>}`.
pub const PUSH_RULES_TYPE: &str = "m.push_rules";
