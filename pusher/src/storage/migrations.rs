//! The pusher's tables (its own; nothing else reads them).

use myelin_storage::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration {
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
}];
