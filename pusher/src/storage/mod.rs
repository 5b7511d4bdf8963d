//! The pusher's own tables: each user's push ruleset (with a version for
//! optimistic concurrency and whether it was ever published) and pushers.

mod migrations;
mod push_rules;
mod pushers;

use myelin_storage::Db;

pub use migrations::MIGRATIONS;
pub use pushers::PusherRow;

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
