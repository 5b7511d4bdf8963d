//! The component's tables (its own; nothing else reads them).

use myelin_storage::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration { version: 1, sqlite: V1_SQLITE, postgres: V1_POSTGRES }];

/// Local users joined to or invited into each room; each room's canonical
/// and alternative aliases (a JSON array); each service's last transaction
/// id (never reused); and each service's queue: an event waits with no
/// `txn_id` until a batch takes it, and stays, with that id, until the
/// service acknowledged the batch.
macro_rules! v1 {
    ($serial:literal) => {
        concat!(
            r#"
CREATE TABLE appservice_members (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE appservice_room_aliases (
    room_id TEXT NOT NULL PRIMARY KEY,
    aliases TEXT NOT NULL
);
CREATE TABLE appservice_txns (
    service_id TEXT NOT NULL PRIMARY KEY,
    last_txn_id BIGINT NOT NULL
);
CREATE TABLE appservice_queue (
    id "#,
            $serial,
            r#",
    service_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event TEXT NOT NULL,
    txn_id BIGINT,
    UNIQUE (service_id, event_id)
);
CREATE INDEX appservice_queue_batches ON appservice_queue (service_id, txn_id, id);
"#
        )
    };
}

const V1_SQLITE: &str = v1!("INTEGER PRIMARY KEY AUTOINCREMENT");
const V1_POSTGRES: &str = v1!("BIGSERIAL PRIMARY KEY");
