//! The pusher's tables (its own; nothing else reads them).

use myelin_storage::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        sqlite: r#"
CREATE TABLE pusher_push_rules (
    user_id TEXT NOT NULL PRIMARY KEY,
    ruleset TEXT NOT NULL,
    version BIGINT NOT NULL,
    published BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE pusher_pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pusher_pushers_user ON pusher_pushers (user_id);
CREATE INDEX pusher_pushers_token ON pusher_pushers (token_hash);
"#,
        postgres: r#"
CREATE TABLE pusher_push_rules (
    user_id TEXT NOT NULL PRIMARY KEY,
    ruleset TEXT NOT NULL,
    version BIGINT NOT NULL,
    published BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE TABLE pusher_pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    token_hash TEXT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pusher_pushers_user ON pusher_pushers (user_id);
CREATE INDEX pusher_pushers_token ON pusher_pushers (token_hash);
"#,
    },
    Migration { version: 2, sqlite: V2_SQLITE, postgres: V2_POSTGRES },
    Migration { version: 3, sqlite: V3, postgres: V3 },
];

/// Rooms whose pushes an admin limited below the server's `pusher.content`.
const V3: &str = "CREATE TABLE pusher_room_content (room_id TEXT NOT NULL PRIMARY KEY, content TEXT NOT NULL);";

/// The room read model (from `roomserver.output`), ignored users (from
/// `clientapi.accountdata`), notifications and the delivery outbox.
macro_rules! v2 {
    ($serial:literal) => {
        concat!(
            r#"
CREATE TABLE pusher_rooms (
    room_id TEXT NOT NULL PRIMARY KEY,
    room_version TEXT NOT NULL,
    last_pos BIGINT NOT NULL
);
CREATE TABLE pusher_room_events (
    event_id TEXT NOT NULL PRIMARY KEY,
    room_id TEXT NOT NULL,
    pos BIGINT NOT NULL
);
CREATE TABLE pusher_room_state (
    room_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    sender TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (room_id, event_type, state_key)
);
CREATE TABLE pusher_membership_log (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    membership TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id, pos)
);
CREATE TABLE pusher_visibility_log (
    room_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    visibility TEXT NOT NULL,
    PRIMARY KEY (room_id, pos)
);
CREATE TABLE pusher_ignored_users (
    user_id TEXT NOT NULL,
    ignored_user_id TEXT NOT NULL,
    PRIMARY KEY (user_id, ignored_user_id)
);
CREATE INDEX pusher_ignored_users_ignored ON pusher_ignored_users (ignored_user_id);
CREATE TABLE pusher_notifications (
    id "#,
            $serial,
            r#",
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    pos BIGINT NOT NULL,
    thread_id TEXT NOT NULL,
    ts BIGINT NOT NULL,
    highlight BOOLEAN NOT NULL,
    actions TEXT NOT NULL,
    event TEXT NOT NULL,
    read BOOLEAN NOT NULL DEFAULT FALSE,
    UNIQUE (user_id, event_id)
);
CREATE INDEX pusher_notifications_unread ON pusher_notifications (user_id, room_id, read, pos);
CREATE TABLE pusher_outbox (
    id "#,
            $serial,
            r#",
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_ms BIGINT NOT NULL
);
CREATE INDEX pusher_outbox_pusher ON pusher_outbox (user_id, app_id, pushkey, id);
"#
        )
    };
}

const V2_SQLITE: &str = v2!("INTEGER PRIMARY KEY AUTOINCREMENT");
const V2_POSTGRES: &str = v2!("BIGSERIAL PRIMARY KEY");
