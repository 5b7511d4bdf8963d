//! Pagination and sync tokens. A token names a point *between* events of the
//! sync API's stream: `s<N>` is "just after the event at stream position N".
//! Clients treat them as opaque.

use std::fmt;
use std::str::FromStr;

use myelin_types::MatrixError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct StreamToken(pub i64);

impl fmt::Display for StreamToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
    }
}

impl FromStr for StreamToken {
    type Err = MatrixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix('s')
            .and_then(|n| n.parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .map(StreamToken)
            .ok_or_else(|| MatrixError::invalid_param(format!("Invalid stream token {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!("s42".parse::<StreamToken>().unwrap(), StreamToken(42));
        assert_eq!(StreamToken(7).to_string(), "s7");
        for bad in ["", "s", "42", "s-1", "sx", "t1"] {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
        }
    }
}
