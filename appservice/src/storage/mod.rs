//! The component's own tables: the local memberships and aliases interest
//! reads (`rooms.rs`), and each service's queue of events with the
//! transaction each batch was given (`queue.rs`).

mod migrations;
mod queue;
pub mod rooms;

use myelin_storage::Db;

pub use migrations::MIGRATIONS;
pub use queue::Batch;

/// The name the component's migrations are recorded under.
pub const COMPONENT: &str = "appservice";

/// The component's tables, on the shared pool.
pub struct Storage {
    db: Db,
}

impl Storage {
    /// Migrate the tables and use them.
    pub async fn open(db: Db) -> Result<Self, myelin_storage::StorageError> {
        db.migrate(COMPONENT, MIGRATIONS).await?;
        Ok(Self { db })
    }
}
