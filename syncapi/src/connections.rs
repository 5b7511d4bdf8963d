//! Sliding sync connections (MSC4186): what each connection of a device has
//! been sent, kept in memory per `pos`. A restart forgets them; the client
//! then gets `M_UNKNOWN_POS` and starts the connection again, which the
//! proposal allows a server to ask at any time.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use myelin_types::random::alphanumeric;

/// Positions kept per connection: the one the client last used and a few
/// answers it may not have received yet (retries reuse the older `pos`).
const STATES_PER_CONNECTION: usize = 8;

/// Connections kept in all; the least recently used goes first.
const MAX_CONNECTIONS: usize = 10_000;

/// A connection: user, device and the client's `conn_id`.
pub type ConnKey = (String, String, String);

struct Connection<S> {
    /// Names this connection in its `pos` tokens, so that a `pos` from a
    /// connection since replaced (or from before a restart) is unknown.
    nonce: String,
    next: u64,
    states: BTreeMap<u64, Arc<S>>,
    last_used: u64,
}

pub struct Connections<S> {
    inner: Mutex<Inner<S>>,
}

struct Inner<S> {
    connections: HashMap<ConnKey, Connection<S>>,
    clock: u64,
}

impl<S> Default for Connections<S> {
    fn default() -> Self {
        Self { inner: Mutex::new(Inner { connections: HashMap::new(), clock: 0 }) }
    }
}

fn split(pos: &str) -> Option<(&str, u64)> {
    let (nonce, seq) = pos.split_once('_')?;
    Some((nonce, seq.parse().ok()?))
}

impl<S> Connections<S> {
    /// The state the connection was left in at `pos`; `None` when that
    /// `pos` is unknown. States before it are dropped: the client has
    /// moved past them.
    pub fn get(&self, key: &ConnKey, pos: &str) -> Option<Arc<S>> {
        let (nonce, seq) = split(pos)?;
        let mut inner = self.inner.lock().expect("connections lock");
        inner.clock += 1;
        let now = inner.clock;
        let connection = inner.connections.get_mut(key).filter(|c| c.nonce == nonce)?;
        let state = connection.states.get(&seq)?.clone();
        connection.states = connection.states.split_off(&seq);
        connection.last_used = now;
        Some(state)
    }

    /// Record the state after an answer; its `pos`. Without `after` (the
    /// `pos` the request named) the connection starts again.
    pub fn put(&self, key: &ConnKey, after: Option<&str>, state: S) -> String {
        let mut inner = self.inner.lock().expect("connections lock");
        inner.clock += 1;
        let now = inner.clock;
        let continues = after
            .and_then(split)
            .is_some_and(|(nonce, _)| inner.connections.get(key).is_some_and(|connection| connection.nonce == nonce));
        if !continues {
            if !inner.connections.contains_key(key)
                && inner.connections.len() >= MAX_CONNECTIONS
                && let Some(oldest) =
                    inner.connections.iter().min_by_key(|(_, c)| c.last_used).map(|(key, _)| key.clone())
            {
                inner.connections.remove(&oldest);
            }
            inner.connections.insert(
                key.clone(),
                Connection { nonce: alphanumeric(12), next: 0, states: BTreeMap::new(), last_used: now },
            );
        }
        let connection = inner.connections.get_mut(key).expect("inserted above");
        connection.next += 1;
        let seq = connection.next;
        connection.states.insert(seq, Arc::new(state));
        while connection.states.len() > STATES_PER_CONNECTION {
            connection.states.pop_first();
        }
        connection.last_used = now;
        format!("{}_{seq}", connection.nonce)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn: &str) -> ConnKey {
        ("@a:x".to_owned(), "DEV".to_owned(), conn.to_owned())
    }

    #[test]
    fn positions_follow_their_connection() {
        let connections = Connections::default();
        let first = connections.put(&key(""), None, 1);
        assert_eq!(connections.get(&key(""), &first).as_deref(), Some(&1));
        assert!(connections.get(&key("other"), &first).is_none(), "another conn_id");
        let second = connections.put(&key(""), Some(&first), 2);
        // A retry of the same request still finds the older state.
        assert_eq!(connections.get(&key(""), &first).as_deref(), Some(&1));
        assert_eq!(connections.get(&key(""), &second).as_deref(), Some(&2));
        // Once the client used `second`, `first` is gone.
        assert!(connections.get(&key(""), &first).is_none());
        // Starting again forgets the old connection.
        let restarted = connections.put(&key(""), None, 3);
        assert!(connections.get(&key(""), &second).is_none());
        assert_eq!(connections.get(&key(""), &restarted).as_deref(), Some(&3));
        for bad in ["", "x", "_1", "abc_", "abc_x", &format!("{restarted}0")] {
            assert!(connections.get(&key(""), bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn only_a_few_states_are_kept() {
        let connections = Connections::default();
        let first = connections.put(&key(""), None, 0);
        let mut last = first.clone();
        for n in 1..=STATES_PER_CONNECTION {
            last = connections.put(&key(""), Some(&last), n);
        }
        assert!(connections.get(&key(""), &first).is_none());
        assert_eq!(connections.get(&key(""), &last).as_deref(), Some(&STATES_PER_CONNECTION));
    }
}
