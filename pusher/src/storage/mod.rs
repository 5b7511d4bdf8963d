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
pub use notifications::ReceiptScope;
pub use outbox::OutboxRow;
pub use pushers::PusherRow;
pub use rooms::{EventWrite, Membership, NewDelivery, NewNotification, RoomSnapshot, StateEntry};

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
