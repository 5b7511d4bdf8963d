//! The room server: the only writer of room state (DESIGN.md invariant 3).
pub mod api;
