//! Process-wide logging: a text subscriber on stderr with an `EnvFilter`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global logger is already installed")]
    AlreadyInstalled,
}

/// Install the global subscriber; `filter` is a `tracing` directive list such
/// as `info` or `myelin_roomserver=debug,info` (from `global.log_filter`).
pub fn init_logging(filter: &str) -> Result<(), LoggingError> {
    let env_filter = EnvFilter::try_new(filter)
        .map_err(|e| LoggingError::Filter { filter: filter.to_owned(), reason: e.to_string() })?;
    tracing_subscriber::fmt()
        .with_env_filter(env_filter)
        .with_writer(std::io::stderr)
        // Colour codes only help a terminal; in files and journals they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .try_init()
        .map_err(|_| LoggingError::AlreadyInstalled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_before_anything_is_installed() {
        assert!(matches!(init_logging("info,[unclosed"), Err(LoggingError::Filter { .. })));
    }
}
