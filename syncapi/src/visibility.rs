//! History visibility for `/sync` and `/messages`: the rules themselves are
//! `myelin-visibility`, shared with push (DESIGN.md invariant 8); this
//! module only feeds them from the sync API's own tables.

pub use myelin_visibility::{HistoryChange, HistoryVisibility};

use crate::SyncApiError;
use crate::storage::{MembershipChange, Storage};

impl myelin_visibility::MembershipChange for MembershipChange {
    fn pos(&self) -> i64 {
        self.pos
    }

    fn membership(&self) -> &str {
        &self.membership
    }
}

/// How one user sees one room, with the room's history visibility changes
/// read from the state log.
pub struct RoomView<'a>(myelin_visibility::RoomView<'a, MembershipChange>);

impl<'a> RoomView<'a> {
    /// Read the room's history visibility changes up to `upto` from the state log.
    pub async fn load(
        storage: &Storage,
        room_id: &str,
        memberships: &'a [MembershipChange],
        upto: i64,
    ) -> Result<Self, SyncApiError> {
        let history = storage.history_visibility_changes(room_id, upto).await?;
        Ok(Self(myelin_visibility::RoomView::new(memberships, history)))
    }

    /// The current history visibility (as far as loaded).
    pub fn current_visibility(&self) -> HistoryVisibility {
        self.0.current_visibility()
    }

    /// Stream ranges `(after, upto]` whose events the user may see, in order.
    pub fn visible_ranges(&self) -> Vec<(i64, i64)> {
        self.0.visible_ranges()
    }
}
