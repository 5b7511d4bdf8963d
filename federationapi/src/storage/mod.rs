//! The federation API's own tables: remote server keys, received
//! transactions, the sender's read model of joined servers and its
//! queue of PDUs per destination, and the device list updates sent. One SQL text for both databases; DDL per
//! dialect.

pub mod device_lists;
pub mod keys;
pub mod sender;
pub mod transactions;

use myelin_storage::Migration;

pub const COMPONENT: &str = "federationapi";

/// The same DDL suits both dialects (TEXT and BIGINT only).
const V1: &str = "
CREATE TABLE federationapi_server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    public_key TEXT NOT NULL,
    -- Current keys: the valid_until_ts of the response that listed them.
    valid_until_ts BIGINT,
    -- Old keys: when they stopped being used.
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);
-- The latest signed key response of each server, served again as a notary.
CREATE TABLE federationapi_key_responses (
    server_name TEXT NOT NULL PRIMARY KEY,
    response TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    fetched_ts BIGINT NOT NULL
);
-- Answered /send transactions, so a retried transaction gets the same answer.
CREATE TABLE federationapi_transactions (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
";

/// The sender: who is joined where (from `roomserver.output`), and the PDUs
/// still to deliver to each destination, in the order they were queued.
const V2_SQLITE: &str = "
CREATE TABLE federationapi_joined_members (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE federationapi_queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pdu TEXT NOT NULL,
    UNIQUE (destination, event_id)
);
";
const V2_POSTGRES: &str = "
CREATE TABLE federationapi_joined_members (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE federationapi_queue (
    seq BIGSERIAL PRIMARY KEY,
    destination TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pdu TEXT NOT NULL,
    UNIQUE (destination, event_id)
);
";

/// EDUs share the queue with PDUs (one transaction carries both, in queue
/// order): `kind` says which a row holds.
const V3: &str = "ALTER TABLE federationapi_queue ADD COLUMN kind TEXT NOT NULL DEFAULT 'pdu';";

/// Device list updates sent about each local user (see `device_lists.rs`).
const V4: &str = "
CREATE TABLE federationapi_device_lists (
    user_id TEXT NOT NULL PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    record_offset BIGINT NOT NULL
);
";

pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, sqlite: V1, postgres: V1 },
    Migration { version: 2, sqlite: V2_SQLITE, postgres: V2_POSTGRES },
    Migration { version: 3, sqlite: V3, postgres: V3 },
    Migration { version: 4, sqlite: V4, postgres: V4 },
];
