//! Pagination and sync tokens. The sync API has seven streams: room events
//! (positions in its event table), account data, typing, receipts,
//! to-device messages, device list changes and presence. A sync token
//! `s<events>_<account data>_<typing>_<receipts>_<to-device>_<device lists>_<presence>`
//! names a point in all seven; pagination tokens name a point *between* room events, `s<N>`
//! being "just after the event at position N". The older forms `s<N>`,
//! `s<events>_<account data>_<typing>_<receipts>` and the five- and six-stream ones are still accepted as sync
//! tokens (the missing streams then start from the beginning), and a sync token is accepted where a
//! pagination token is expected (its event position counts). Clients treat
//! them as opaque.

use std::fmt;
use std::str::FromStr;

use myelin_types::MatrixError;

/// A position in the room event stream.
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
        // Backfilled history lies at positions below 1, so a pagination
        // token may be negative (`s-<N>`); sync tokens never are.
        if let Some(digits) = s.strip_prefix("s-")
            && !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && let Ok(n) = digits.parse::<i64>()
        {
            return Ok(StreamToken(-n));
        }
        s.parse::<SyncToken>().map(|token| StreamToken(token.events))
    }
}

/// The sync API's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Events,
    AccountData,
    Typing,
    Receipts,
    ToDevice,
    DeviceLists,
    Presence,
}

/// A position in every stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncToken {
    pub events: i64,
    pub account_data: i64,
    pub typing: i64,
    pub receipts: i64,
    pub to_device: i64,
    pub device_lists: i64,
    pub presence: i64,
}

impl SyncToken {
    pub fn get(&self, stream: Stream) -> i64 {
        match stream {
            Stream::Events => self.events,
            Stream::AccountData => self.account_data,
            Stream::Typing => self.typing,
            Stream::Receipts => self.receipts,
            Stream::ToDevice => self.to_device,
            Stream::DeviceLists => self.device_lists,
            Stream::Presence => self.presence,
        }
    }

    pub fn get_mut(&mut self, stream: Stream) -> &mut i64 {
        match stream {
            Stream::Events => &mut self.events,
            Stream::AccountData => &mut self.account_data,
            Stream::Typing => &mut self.typing,
            Stream::Receipts => &mut self.receipts,
            Stream::ToDevice => &mut self.to_device,
            Stream::DeviceLists => &mut self.device_lists,
            Stream::Presence => &mut self.presence,
        }
    }

    /// Each position no later than `limit`'s: a token from before a restart
    /// of the in-memory typing stream still works, as do stale ones.
    pub fn min(self, limit: SyncToken) -> SyncToken {
        SyncToken {
            events: self.events.min(limit.events),
            account_data: self.account_data.min(limit.account_data),
            typing: self.typing.min(limit.typing),
            receipts: self.receipts.min(limit.receipts),
            to_device: self.to_device.min(limit.to_device),
            device_lists: self.device_lists.min(limit.device_lists),
            presence: self.presence.min(limit.presence),
        }
    }

    /// Whether any stream of `self` is past `other`'s.
    pub fn any_after(&self, other: &SyncToken) -> bool {
        self.events > other.events
            || self.account_data > other.account_data
            || self.typing > other.typing
            || self.receipts > other.receipts
            || self.to_device > other.to_device
            || self.device_lists > other.device_lists
            || self.presence > other.presence
    }
}

impl fmt::Display for SyncToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let SyncToken { events, account_data, typing, receipts, to_device, device_lists, presence } = self;
        write!(f, "s{events}_{account_data}_{typing}_{receipts}_{to_device}_{device_lists}_{presence}")
    }
}

impl FromStr for SyncToken {
    type Err = MatrixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MatrixError::invalid_param(format!("Invalid stream token {s:?}"));
        let positions = s
            .strip_prefix('s')
            .ok_or_else(invalid)?
            .split('_')
            .map(|n| if n.bytes().all(|b| b.is_ascii_digit()) { n.parse::<i64>().ok() } else { None })
            .collect::<Option<Vec<i64>>>()
            .ok_or_else(invalid)?;
        match positions[..] {
            [events] => Ok(SyncToken { events, ..SyncToken::default() }),
            [events, account_data, typing, receipts] => {
                Ok(SyncToken { events, account_data, typing, receipts, ..SyncToken::default() })
            }
            [events, account_data, typing, receipts, to_device] => {
                Ok(SyncToken { events, account_data, typing, receipts, to_device, ..SyncToken::default() })
            }
            [events, account_data, typing, receipts, to_device, device_lists] => {
                Ok(SyncToken { events, account_data, typing, receipts, to_device, device_lists, presence: 0 })
            }
            [events, account_data, typing, receipts, to_device, device_lists, presence] => {
                Ok(SyncToken { events, account_data, typing, receipts, to_device, device_lists, presence })
            }
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!("s42".parse::<StreamToken>().unwrap(), StreamToken(42));
        assert_eq!(StreamToken(7).to_string(), "s7");
        for bad in ["", "s", "42", "s-", "s--1", "sx", "t1", "s1_2", "s1_2_3_4_5_6_7_8", "s1__3_4", "s1_2_3_-4", "s+1"]
        {
            assert!(bad.parse::<StreamToken>().is_err(), "{bad}");
            assert!(bad.parse::<SyncToken>().is_err(), "{bad}");
        }
        // Backfilled history: pagination tokens only.
        assert_eq!("s-3".parse::<StreamToken>().unwrap(), StreamToken(-3));
        assert_eq!(StreamToken(-3).to_string(), "s-3");
        assert!("s-3".parse::<SyncToken>().is_err());
        assert!("s-3_1_1_1".parse::<StreamToken>().is_err());
    }

    #[test]
    fn sync_tokens_round_trip_and_accept_the_old_form() {
        let token = SyncToken {
            events: 5,
            account_data: 2,
            typing: 9,
            receipts: 1,
            to_device: 3,
            device_lists: 4,
            presence: 6,
        };
        assert_eq!(token.to_string(), "s5_2_9_1_3_4_6");
        assert_eq!("s5_2_9_1_3_4_6".parse::<SyncToken>().unwrap(), token);
        assert_eq!("s5_2_9_1_3_4".parse::<SyncToken>().unwrap(), SyncToken { presence: 0, ..token });
        assert_eq!("s5_2_9_1_3".parse::<SyncToken>().unwrap(), SyncToken { device_lists: 0, presence: 0, ..token });
        let old = SyncToken { to_device: 0, device_lists: 0, presence: 0, ..token };
        assert_eq!("s5_2_9_1".parse::<SyncToken>().unwrap(), old);
        assert_eq!("s5".parse::<SyncToken>().unwrap(), SyncToken { events: 5, ..SyncToken::default() });
        assert_eq!("s5_2_9_1".parse::<StreamToken>().unwrap(), StreamToken(5));
    }
}
