//! Who is typing where, from `edu.typing`. Typing is ephemeral, so it lives
//! in memory only: its stream restarts at 0 with the process (older tokens
//! are clamped, see `SyncToken::min`). Expiry is decided on the bus clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use myelin_clientapi::api::TypingUpdate;

#[derive(Default)]
pub struct Typing {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The typing stream's newest position.
    pos: i64,
    rooms: HashMap<String, RoomTyping>,
}

#[derive(Default)]
struct RoomTyping {
    /// User id → when their typing lapses (bus clock ms).
    users: BTreeMap<String, u64>,
    /// The typing position of the room's last change.
    pos: i64,
}

impl Inner {
    fn bump(&mut self, room_id: &str) -> i64 {
        self.pos += 1;
        let pos = self.pos;
        self.rooms.entry(room_id.to_owned()).or_default().pos = pos;
        pos
    }
}

impl Typing {
    /// Apply an update; the new typing position when the room's typing
    /// users changed (a repeat of the same update changes nothing).
    pub fn apply(&self, update: &TypingUpdate, now_ms: u64) -> Option<i64> {
        let mut inner = self.inner.lock().expect("typing lock");
        let room_id = update.room_id.as_str();
        let user_id = update.user_id.as_str();
        let room = inner.rooms.entry(room_id.to_owned()).or_default();
        let was_typing = room.users.get(user_id).is_some_and(|&expires| expires > now_ms);
        let typing = update.typing && update.expires_ms > now_ms;
        if typing {
            room.users.insert(user_id.to_owned(), update.expires_ms);
        } else {
            room.users.remove(user_id);
        }
        // A refreshed timeout is not news to clients: only start and stop are.
        (typing != was_typing).then(|| inner.bump(room_id))
    }

    /// Drop lapsed typing; the new position and the rooms that changed.
    pub fn expire(&self, now_ms: u64) -> Option<(i64, Vec<String>)> {
        let mut inner = self.inner.lock().expect("typing lock");
        let mut changed = Vec::new();
        for (room_id, room) in &mut inner.rooms {
            let before = room.users.len();
            room.users.retain(|_, expires| *expires > now_ms);
            if room.users.len() != before {
                changed.push(room_id.clone());
            }
        }
        if changed.is_empty() {
            return None;
        }
        let mut pos = 0;
        for room_id in &changed {
            pos = inner.bump(room_id);
        }
        Some((pos, changed))
    }

    /// The users typing in the room now, if its typing changed in `(after, upto]`.
    pub fn changed(&self, room_id: &str, after: i64, upto: i64, now_ms: u64) -> Option<Vec<String>> {
        let inner = self.inner.lock().expect("typing lock");
        let room = inner.rooms.get(room_id)?;
        (room.pos > after && room.pos <= upto)
            .then(|| room.users.iter().filter(|&(_, &expires)| expires > now_ms).map(|(u, _)| u.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(typing: bool, expires_ms: u64) -> TypingUpdate {
        TypingUpdate { room_id: "!r:x".try_into().unwrap(), user_id: "@a:x".try_into().unwrap(), typing, expires_ms }
    }

    #[test]
    fn start_repeat_stop_and_expire() {
        let typing = Typing::default();
        assert_eq!(typing.apply(&update(true, 1_000), 0), Some(1));
        assert_eq!(typing.apply(&update(true, 1_000), 0), None, "a redelivery is a no-op");
        assert_eq!(typing.changed("!r:x", 0, 1, 10), Some(vec!["@a:x".to_owned()]));
        assert_eq!(typing.changed("!r:x", 1, 1, 10), None);
        assert_eq!(typing.apply(&update(false, 0), 0), Some(2));
        assert_eq!(typing.changed("!r:x", 1, 2, 10), Some(vec![]));
        assert_eq!(typing.apply(&update(true, 500), 0), Some(3));
        assert_eq!(typing.expire(499), None);
        assert_eq!(typing.expire(500), Some((4, vec!["!r:x".to_owned()])));
        assert_eq!(typing.changed("!r:x", 3, 4, 500), Some(vec![]));
    }
}
