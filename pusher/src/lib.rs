//! Push notifications: push rules evaluation, notification counts,
//! `/notifications` and delivery to push gateways (DESIGN.md invariants 8 and 9).
//!
//! Nothing here yet: push arrives with the pusher work. Until then
//! `myelin run` accepts `pusher` in `--components` and logs that it has
//! nothing to run, so deployment files can already name it; no endpoint
//! answers as if push worked.
