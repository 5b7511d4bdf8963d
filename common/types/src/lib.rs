//! Leaf types shared by every component: Matrix errors and their single
//! mapping to HTTP, the settable clock, and CSPRNG-backed identifiers.

pub mod clock;
pub mod error;
pub mod random;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{ErrorCode, MatrixError};
pub use ruma;
pub mod auth;
pub mod body;
pub mod events;
pub mod json;
pub mod redaction;
pub mod signing;
