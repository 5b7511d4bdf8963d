//! The sync API's tables (its own; nothing else reads them).

use myelin_storage::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: r#"
CREATE TABLE syncapi_events (
    stream_pos INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    pdu TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    txn_device_id TEXT,
    txn_id TEXT
);
CREATE INDEX syncapi_events_room ON syncapi_events (room_id, stream_pos);
CREATE TABLE syncapi_current_state (
    room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL,
    event_id TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE TABLE syncapi_state_log (
    room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (room_id, event_type, state_key, stream_pos)
);
CREATE INDEX syncapi_state_log_pos ON syncapi_state_log (room_id, stream_pos);
CREATE TABLE syncapi_memberships (
    room_id TEXT NOT NULL, user_id TEXT NOT NULL, membership TEXT NOT NULL,
    event_id TEXT, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE syncapi_membership_log (
    user_id TEXT NOT NULL, room_id TEXT NOT NULL, stream_pos BIGINT NOT NULL, membership TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (user_id, room_id, stream_pos)
);
CREATE TABLE syncapi_filters (
    filter_id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL,
    filter TEXT NOT NULL
);
"#,
        postgres: r#"
CREATE TABLE syncapi_events (
    stream_pos BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT,
    pdu TEXT NOT NULL,
    timeline BIGINT NOT NULL,
    txn_device_id TEXT,
    txn_id TEXT
);
CREATE INDEX syncapi_events_room ON syncapi_events (room_id, stream_pos);
CREATE TABLE syncapi_current_state (
    room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL,
    event_id TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE TABLE syncapi_state_log (
    room_id TEXT NOT NULL, event_type TEXT NOT NULL, state_key TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (room_id, event_type, state_key, stream_pos)
);
CREATE INDEX syncapi_state_log_pos ON syncapi_state_log (room_id, stream_pos);
CREATE TABLE syncapi_memberships (
    room_id TEXT NOT NULL, user_id TEXT NOT NULL, membership TEXT NOT NULL,
    event_id TEXT, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE TABLE syncapi_membership_log (
    user_id TEXT NOT NULL, room_id TEXT NOT NULL, stream_pos BIGINT NOT NULL, membership TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (user_id, room_id, stream_pos)
);
CREATE TABLE syncapi_filters (
    filter_id BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL,
    filter TEXT NOT NULL
);
"#,
    },
    Migration { version: 2, sqlite: V2, postgres: V2 },
    Migration { version: 3, sqlite: V3_SQLITE, postgres: V3_POSTGRES },
    Migration { version: 4, sqlite: V4_SQLITE, postgres: V4_POSTGRES },
    Migration { version: 5, sqlite: V5, postgres: V5 },
    Migration { version: 6, sqlite: V6, postgres: V6 },
    Migration { version: 7, sqlite: V7, postgres: V7 },
    Migration { version: 8, sqlite: V8, postgres: V8 },
    Migration { version: 9, sqlite: V9, postgres: V9 },
    Migration { version: 10, sqlite: V10, postgres: V10 },
    Migration { version: 11, sqlite: V11_SQLITE, postgres: V11_POSTGRES },
    Migration { version: 12, sqlite: V12, postgres: V12 },
];

/// Accounts deactivated with `erase`: their events are served redacted to
/// whoever was not joined when they were sent.
const V12: &str = "CREATE TABLE syncapi_erased_users (user_id TEXT PRIMARY KEY);";

/// Account data and receipts: the latest value per key, each carrying the
/// position in its stream at which it last changed (so `(since, upto]`
/// finds what changed, and a record applied twice changes nothing).
const V2: &str = r#"
CREATE TABLE syncapi_account_data (
    user_id TEXT NOT NULL, room_id TEXT NOT NULL, data_type TEXT NOT NULL,
    content TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, data_type)
);
CREATE INDEX syncapi_account_data_pos ON syncapi_account_data (user_id, stream_pos);
CREATE TABLE syncapi_receipts (
    room_id TEXT NOT NULL, user_id TEXT NOT NULL, receipt_type TEXT NOT NULL, thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL, ts BIGINT NOT NULL, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX syncapi_receipts_pos ON syncapi_receipts (room_id, stream_pos);
"#;

/// To-device inboxes: a message waits for its device until a sync token past
/// its position acknowledges it. Positions come from a sequence, never from
/// `MAX`, since acknowledged messages are deleted and positions must not be
/// reused under tokens clients hold. `message_id` makes a redelivered record
/// a no-op.
const V3_SQLITE: &str = r#"
CREATE TABLE syncapi_to_device (
    stream_pos INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, device_id TEXT NOT NULL,
    sender TEXT NOT NULL, event_type TEXT NOT NULL, content TEXT NOT NULL
);
CREATE INDEX syncapi_to_device_inbox ON syncapi_to_device (user_id, device_id, stream_pos);
"#;
const V3_POSTGRES: &str = r#"
CREATE TABLE syncapi_to_device (
    stream_pos BIGSERIAL PRIMARY KEY,
    message_id TEXT NOT NULL UNIQUE,
    user_id TEXT NOT NULL, device_id TEXT NOT NULL,
    sender TEXT NOT NULL, event_type TEXT NOT NULL, content TEXT NOT NULL
);
CREATE INDEX syncapi_to_device_inbox ON syncapi_to_device (user_id, device_id, stream_pos);
"#;

/// End-to-end key state from `clientapi.keychange`: each device's key counts
/// (latest record wins), and the stream of users whose device keys changed.
const V4_SQLITE: &str = r#"
CREATE TABLE syncapi_key_counts (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL,
    one_time_key_counts TEXT NOT NULL, unused_fallback_key_types TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE syncapi_device_list_changes (
    stream_pos INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL
);
"#;
const V4_POSTGRES: &str = r#"
CREATE TABLE syncapi_key_counts (
    user_id TEXT NOT NULL, device_id TEXT NOT NULL,
    one_time_key_counts TEXT NOT NULL, unused_fallback_key_types TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE TABLE syncapi_device_list_changes (
    stream_pos BIGSERIAL PRIMARY KEY,
    user_id TEXT NOT NULL
);
"#;

/// Notification counts from `pusher.counts`: the latest per (user, room).
const V5: &str = r#"
CREATE TABLE syncapi_notification_counts (
    user_id TEXT NOT NULL, room_id TEXT NOT NULL,
    notification_count BIGINT NOT NULL, highlight_count BIGINT NOT NULL, threads TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
"#;

/// Relations (`m.relates_to` with an `event_id`): threads, edits,
/// annotations and references, by the event they point at.
const V6: &str = r#"
CREATE TABLE syncapi_relations (
    room_id TEXT NOT NULL, parent_id TEXT NOT NULL, rel_type TEXT NOT NULL,
    child_id TEXT NOT NULL, child_type TEXT NOT NULL, child_sender TEXT NOT NULL, stream_pos BIGINT NOT NULL,
    PRIMARY KEY (child_id)
);
CREATE INDEX syncapi_relations_parent ON syncapi_relations (room_id, parent_id, stream_pos);
CREATE INDEX syncapi_relations_threads ON syncapi_relations (room_id, rel_type, stream_pos);
"#;

/// Presence: each user's latest, with the position in the presence stream
/// at which it last changed.
const V7: &str = r#"
CREATE TABLE syncapi_presence (
    user_id TEXT PRIMARY KEY NOT NULL, presence TEXT NOT NULL, status_msg TEXT,
    last_active_ts BIGINT NOT NULL, stream_pos BIGINT NOT NULL
);
CREATE INDEX syncapi_presence_pos ON syncapi_presence (stream_pos);
"#;

/// Forgotten rooms (`clientapi.forgotten`): each names the membership event
/// as of which the user forgot the room, so memberships up to it are left
/// out of the user's view however the record and the event are ordered.
const V8: &str = r#"
CREATE TABLE syncapi_forgotten (
    user_id TEXT NOT NULL, room_id TEXT NOT NULL, event_id TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, event_id)
);
CREATE INDEX syncapi_membership_log_event ON syncapi_membership_log (user_id, room_id, event_id);
"#;

/// The state entry each state event replaced (`unsigned.replaces_state`,
/// `prev_content`), recorded when the event is stored; for events stored
/// before, the previous entry of the same key in the state log.
const V9: &str = r#"
CREATE TABLE syncapi_replaced_state (
    event_id TEXT PRIMARY KEY NOT NULL, replaced_id TEXT NOT NULL
);
INSERT INTO syncapi_replaced_state (event_id, replaced_id)
SELECT event_id, replaced_id FROM (
    SELECT l.event_id AS event_id, (SELECT p.event_id FROM syncapi_state_log p
        WHERE p.room_id = l.room_id AND p.event_type = l.event_type AND p.state_key = l.state_key
        AND p.stream_pos < l.stream_pos ORDER BY p.stream_pos DESC LIMIT 1) AS replaced_id
    FROM syncapi_state_log l WHERE l.event_id IS NOT NULL
) x WHERE replaced_id IS NOT NULL AND replaced_id <> event_id
ON CONFLICT (event_id) DO NOTHING;
"#;

/// A user's rooms: `/sync`'s device list changes and the users sharing a
/// room both start from them. Without it each such question scanned every
/// membership of every user (98 s for one `/sync` after a join to a
/// 10,000-member room on a server with 100,000 memberships).
const V10: &str = "CREATE INDEX syncapi_memberships_user ON syncapi_memberships (user_id, membership);";

/// The full-text index of `/search` (see `storage/search.rs`), filled from
/// the timeline events already stored.
const V11_SQLITE: &str = r#"
CREATE VIRTUAL TABLE syncapi_search USING fts5(words, field UNINDEXED, room_id UNINDEXED, tokenize = 'unicode61');
INSERT INTO syncapi_search (rowid, words, field, room_id)
SELECT stream_pos, replace(json_extract(pdu, '$.content.' || name), char(0), ' '), field, room_id FROM (
    SELECT stream_pos, pdu, room_id,
        CASE event_type WHEN 'm.room.message' THEN 'content.body' WHEN 'm.room.name' THEN 'content.name'
            ELSE 'content.topic' END AS field,
        CASE event_type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END AS name
    FROM syncapi_events WHERE timeline = 1 AND event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
) candidates WHERE json_type(pdu, '$.content.' || name) = 'text';
"#;

/// PostgreSQL's `jsonb` refuses `\u0000`, so events holding it are left
/// out of the backfill rather than failing the migration.
const V11_POSTGRES: &str = r#"
CREATE TABLE syncapi_search (
    stream_pos BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    field TEXT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX syncapi_search_vector ON syncapi_search USING GIN (vector);
INSERT INTO syncapi_search (stream_pos, room_id, field, vector)
SELECT stream_pos, room_id, field, to_tsvector('simple', doc -> 'content' ->> name) FROM (
    SELECT stream_pos, room_id,
        CASE event_type WHEN 'm.room.message' THEN 'content.body' WHEN 'm.room.name' THEN 'content.name'
            ELSE 'content.topic' END AS field,
        CASE event_type WHEN 'm.room.message' THEN 'body' WHEN 'm.room.name' THEN 'name' ELSE 'topic' END AS name,
        CASE WHEN strpos(pdu, '\u0000') = 0 THEN CAST(pdu AS jsonb) END AS doc
    FROM syncapi_events WHERE timeline = 1 AND event_type IN ('m.room.message', 'm.room.name', 'm.room.topic')
) candidates WHERE jsonb_typeof(doc -> 'content' -> name) = 'string';
"#;
