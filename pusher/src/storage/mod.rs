//! The pusher's own tables: each user's push ruleset (with a version for
//! optimistic concurrency and whether it was ever published), pushers, the
//! room read model, notifications, the delivery outbox, and the
//! per-room limits an admin set on what gateways receive.

mod migrations;
mod notifications;
mod outbox;
mod push_rules;
mod pushers;
mod room_content;
mod rooms;

use myelin_storage::Db;

pub use migrations::MIGRATIONS;
pub use notifications::{Counts, ReceiptScope};
pub use outbox::OutboxRow;
pub use pushers::PusherRow;
pub use rooms::{EventWrite, Membership, NewDelivery, NewNotification, RoomModel, RoomSnapshot, StateEntry};

/// The name the pusher's migrations are recorded under.
pub const COMPONENT: &str = "pusher";

pub struct Storage {
    db: Db,
}

impl Storage {
    pub async fn open(db: Db) -> Result<Self, myelin_storage::StorageError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(Self { db })
    }
}

/// Users per `IN (...)` list: well under every backend's bound parameter limit.
const IN_LIST_CHUNK: usize = 500;

/// `$first, $first+1, ...`: `count` numbered parameters for an `IN (...)`
/// list. Only these are ever formatted into SQL, which is why the queries
/// built with them may be asserted safe.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(super::placeholders(2, 3), "$2, $3, $4");
        assert_eq!(super::placeholders(1, 0), "");
    }
}
