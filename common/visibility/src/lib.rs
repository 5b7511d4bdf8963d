//! Which events of a room a user may see: the history visibility rules
//! (<https://spec.matrix.org/v1.16/client-server-api/#history-visibility>),
//! in one place for `/sync`, `/messages` and push (DESIGN.md invariant 8).
//! Pure rules only: each component loads the changes from its own tables.
//!
//! Whether an event is visible depends on the room's
//! `m.room.history_visibility` at the event, the user's membership at it and
//! whether the user joined at or after it. All of these change only at a few
//! stream positions (history visibility changes and the user's own
//! membership changes), so visibility is computed once per room as stream
//! ranges between those positions, from the state log, instead of looking
//! at the state of every event:
//!
//! - `world_readable`: everyone sees the event;
//! - the user was joined at the event: they see it;
//! - `shared` (the default): they see it if they joined the room at any point
//!   after it was sent;
//! - `invited`: they see it if they were invited at the event;
//! - otherwise (`joined`, or an unknown value) they do not.
//!
//! A user always sees their own membership events, and nothing after they
//! left or were banned. At a history visibility change the more permissive
//! of the old and new value applies to the changing event itself.

use serde_json::Value;

/// `m.room.history_visibility` values, least permissive first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistoryVisibility {
    Joined,
    Invited,
    Shared,
    WorldReadable,
}

impl HistoryVisibility {
    /// The value an event's content sets: `shared` when the room has none
    /// (`None`), `joined` (the strictest) when the value is not understood.
    pub fn from_content(content: Option<&Value>) -> Self {
        let Some(content) = content else {
            return Self::Shared;
        };
        match content.get("history_visibility").and_then(Value::as_str) {
            Some("world_readable") => Self::WorldReadable,
            Some("shared") => Self::Shared,
            Some("invited") => Self::Invited,
            _ => Self::Joined,
        }
    }
}

/// The room's history visibility from stream position `pos` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryChange {
    pub pos: i64,
    pub visibility: HistoryVisibility,
}

/// One change of the user's membership: from stream position `pos` on, the
/// user's membership is `membership` (`join`, `invite`, `leave`, `ban`, ...).
/// Each component keeps these in its own read model, so this is a trait.
pub trait MembershipChange {
    fn pos(&self) -> i64;
    fn membership(&self) -> &str;
}

/// How one user sees one room: the user's membership changes and the room's
/// history visibility changes, both oldest first.
pub struct RoomView<'a, M> {
    memberships: &'a [M],
    history: Vec<HistoryChange>,
}

impl<'a, M: MembershipChange> RoomView<'a, M> {
    pub fn new(memberships: &'a [M], history: Vec<HistoryChange>) -> Self {
        Self { memberships, history }
    }

    /// The history visibility after the event at `pos`.
    fn visibility_at(&self, pos: i64) -> HistoryVisibility {
        let n = self.history.partition_point(|c| c.pos <= pos);
        n.checked_sub(1).map_or(HistoryVisibility::Shared, |i| self.history[i].visibility)
    }

    /// The user's membership after the event at `pos`.
    fn membership_at(&self, pos: i64) -> Option<&str> {
        let n = self.memberships.partition_point(|c| c.pos() <= pos);
        n.checked_sub(1).map(|i| self.memberships[i].membership())
    }

    /// Whether the user joined at `pos` or later.
    fn joins_from(&self, pos: i64) -> bool {
        self.memberships.iter().any(|c| c.pos() >= pos && c.membership() == "join")
    }

    /// The current history visibility (as far as loaded).
    pub fn current_visibility(&self) -> HistoryVisibility {
        self.history.last().map_or(HistoryVisibility::Shared, |c| c.visibility)
    }

    /// Whether the user may see the event at `pos` (which is not their own
    /// membership event) given the room's visibility and their membership there.
    fn allowed(&self, visibility: HistoryVisibility, membership: Option<&str>, pos: i64) -> bool {
        membership == Some("join")
            || match visibility {
                HistoryVisibility::WorldReadable => true,
                HistoryVisibility::Shared => self.joins_from(pos),
                HistoryVisibility::Invited => membership == Some("invite"),
                HistoryVisibility::Joined => false,
            }
    }

    /// Stream ranges `(after, upto]` whose events the user may see, in order.
    pub fn visible_ranges(&self) -> Vec<(i64, i64)> {
        let mut breakpoints: Vec<i64> =
            self.memberships.iter().map(|c| c.pos()).chain(self.history.iter().map(|c| c.pos)).collect();
        breakpoints.sort_unstable();
        breakpoints.dedup();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        let mut push = |after: i64, upto: i64| match ranges.last_mut() {
            Some(last) if last.1 == after => last.1 = upto,
            _ => ranges.push((after, upto)),
        };
        let mut prev = 0;
        for &b in &breakpoints {
            // Between breakpoints nothing changes: the state after `prev` holds.
            if prev < b - 1 && self.allowed(self.visibility_at(prev), self.membership_at(prev), prev + 1) {
                push(prev, b - 1);
            }
            let own = self.memberships.iter().any(|c| c.pos() == b);
            let visibility = self.visibility_at(b - 1).max(self.visibility_at(b));
            if own
                || self.allowed(visibility, self.membership_at(b - 1), b)
                || self.allowed(visibility, self.membership_at(b), b)
            {
                push(b - 1, b);
            }
            prev = b;
        }
        if self.allowed(self.visibility_at(prev), self.membership_at(prev), prev + 1) {
            push(prev, i64::MAX);
        }
        // Nothing after a leave or ban (their own leave included above).
        if let Some(last) = self.memberships.last()
            && matches!(last.membership(), "leave" | "ban")
        {
            ranges.retain_mut(|r| {
                r.1 = r.1.min(last.pos());
                r.0 < r.1
            });
        }
        ranges
    }

    /// Whether the user may see the event at `pos`.
    pub fn can_see(&self, pos: i64) -> bool {
        self.visible_ranges().iter().any(|&(after, upto)| after < pos && pos <= upto)
    }
}

/// Whether another server may read an event of a room over federation
/// (`/event`, `/state`, `/backfill`, `/get_missing_events`, ...), from the
/// history visibility at the event, the memberships its users have in the
/// state at the event, and whether one of its users is joined now. A
/// server sees what its users could: everything in a `world_readable`
/// room, what happened while one of them was joined, `shared` history once
/// one of them is in the room, `invited` history from an invite on.
///
/// Spec: <https://spec.matrix.org/v1.16/server-server-api/#retrieving-events>
pub fn server_may_see<'a>(
    visibility: HistoryVisibility,
    memberships_at_event: impl IntoIterator<Item = &'a str>,
    joined_now: bool,
) -> bool {
    let memberships: Vec<&str> = memberships_at_event.into_iter().collect();
    visibility == HistoryVisibility::WorldReadable
        || memberships.contains(&"join")
        || match visibility {
            HistoryVisibility::Shared => joined_now,
            HistoryVisibility::Invited => memberships.contains(&"invite"),
            HistoryVisibility::Joined | HistoryVisibility::WorldReadable => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HistoryVisibility::*;

    struct Change(i64, String);

    impl MembershipChange for Change {
        fn pos(&self) -> i64 {
            self.0
        }
        fn membership(&self) -> &str {
            &self.1
        }
    }

    fn m(pos: i64, membership: &str) -> Change {
        Change(pos, membership.to_owned())
    }

    fn h(pos: i64, visibility: HistoryVisibility) -> HistoryChange {
        HistoryChange { pos, visibility }
    }

    fn ranges(memberships: &[Change], history: &[HistoryChange]) -> Vec<(i64, i64)> {
        RoomView::new(memberships, history.to_vec()).visible_ranges()
    }

    #[test]
    fn shared_shows_history_before_the_join() {
        assert_eq!(ranges(&[m(10, "join")], &[]), [(0, i64::MAX)]);
        assert_eq!(ranges(&[m(10, "join")], &[h(3, Shared)]), [(0, i64::MAX)]);
        // Left: up to the leave.
        assert_eq!(ranges(&[m(10, "join"), m(20, "leave")], &[]), [(0, 20)]);
        // Never joined: only their own membership events.
        assert_eq!(ranges(&[m(10, "invite"), m(12, "leave")], &[]), [(9, 10), (11, 12)]);
    }

    #[test]
    fn joined_shows_only_while_joined() {
        let history = [h(3, Joined)];
        // The create event etc. before the change are shared and the user joins later.
        assert_eq!(ranges(&[m(10, "join")], &history), [(0, 3), (9, i64::MAX)]);
        assert_eq!(ranges(&[m(8, "invite"), m(10, "join"), m(15, "leave")], &history), [(0, 3), (7, 8), (9, 15)]);
        // Leave and rejoin: the gap stays hidden.
        assert_eq!(
            ranges(&[m(10, "join"), m(15, "leave"), m(20, "join")], &history),
            [(0, 3), (9, 15), (19, i64::MAX)]
        );
    }

    #[test]
    fn invited_shows_from_the_invite() {
        let history = [h(3, Invited)];
        assert_eq!(ranges(&[m(8, "invite"), m(10, "join")], &history), [(0, 3), (7, i64::MAX)]);
    }

    #[test]
    fn world_readable_shows_everything_to_everyone_until_they_leave() {
        // Before the change the default `shared` applies, and a non-member never joins.
        assert_eq!(ranges(&[], &[h(3, WorldReadable)]), [(2, i64::MAX)]);
        assert_eq!(ranges(&[m(10, "join"), m(15, "leave")], &[h(3, WorldReadable)]), [(0, 15)]);
        // The change to world_readable is itself visible; the joined part before not.
        assert_eq!(ranges(&[], &[h(3, Joined), h(6, WorldReadable)]), [(5, i64::MAX)]);
        // The change away from world_readable too, nothing after.
        assert_eq!(ranges(&[], &[h(3, WorldReadable), h(6, Joined)]), [(2, 6)]);
    }

    #[test]
    fn can_see_is_inside_a_visible_range() {
        let memberships = [m(10, "join"), m(15, "leave")];
        let view = RoomView::new(&memberships, vec![h(3, Joined)]);
        assert!(view.can_see(2));
        assert!(!view.can_see(5));
        assert!(view.can_see(10));
        assert!(view.can_see(15));
        assert!(!view.can_see(16));
    }

    #[test]
    fn servers_see_what_their_users_could() {
        assert!(server_may_see(WorldReadable, [], false), "world readable: anyone");
        assert!(server_may_see(Joined, ["leave", "join"], false), "a user joined at the event");
        assert!(!server_may_see(Joined, ["invite", "leave"], true), "joined: only while joined");
        assert!(server_may_see(Shared, [], true), "shared: once in the room");
        assert!(!server_may_see(Shared, ["leave"], false), "shared: not for a server that left");
        assert!(server_may_see(Invited, ["invite"], false), "invited: from the invite");
        assert!(!server_may_see(Invited, ["leave"], true), "invited: not before");
    }
}
